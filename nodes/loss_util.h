// Helpers of the loss nodes (KDLoss, AngularMarginLoss): the autograd-safe channel cosine, the
// clone that makes the frozen teacher's inference tensors usable by autograd, and the
// teacher/student pyramid checks, at load time (shapes) and at run time (tensors).
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "framework/shape.h"

namespace fmam::loss {

// Tensors made under c10::InferenceMode (the frozen teacher) cannot be saved for backward; a
// clone made outside that mode can. Returns `t` itself when it is an ordinary tensor.
at::Tensor autograd_safe(const at::Tensor& t);

// Cosine similarity along dim 1 of [B, C, ...] tensors -> [B, ...]:
//   a.b / (sqrt(max(|a|^2, eps^2)) * sqrt(max(|b|^2, eps^2)))
// torch's F.cosine_similarity (eps 1e-8) up to where the clamp sits: clamping the squared norm
// keeps the gradient finite at a zero vector (d|a|/da is 0/0 there); it is 0 there instead.
at::Tensor cosine(const at::Tensor& a, const at::Tensor& b, double eps = 1e-8);

// Run-time checks of `other` against `ref` (both pyramids of [B, C_j, H_j, W_j] levels): level
// count, rank, batch, channels, size, device. Throws PortError on input `other_name`, e.g.
//   input "student": level 1 has 3 channels, input "teacher" has 2
// Levels are numbered from 0, shallow to deep, as UpsampleSum's messages do.
void check_pyramid(const std::vector<at::Tensor>& ref, const char* ref_name,
                   const std::vector<at::Tensor>& other, const char* other_name);

// The same at load time on per-frame shapes (levels [C, H, W]); unknown shapes and -1 dims pass.
void check_pyramid_shapes(const Shape& ref, const char* ref_name, const Shape& other,
                          const char* other_name);

}  // namespace fmam::loss
