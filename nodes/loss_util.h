// Helpers of the loss nodes (KDLoss, AngularMarginLoss): the autograd-safe channel cosine, the
// clone that makes the frozen teacher's inference tensors usable by autograd. Their pyramid
// checks are networks/pyramid_check.h, shared with the other nodes.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

namespace fmam::loss {

// Tensors made under c10::InferenceMode (the frozen teacher) cannot be saved for backward; a
// clone made outside that mode can. Returns `t` itself when it is an ordinary tensor.
at::Tensor autograd_safe(const at::Tensor& t);

// Cosine similarity along dim 1 of [B, C, ...] tensors -> [B, ...]:
//   a.b / (sqrt(max(|a|^2, eps^2)) * sqrt(max(|b|^2, eps^2)))
// torch's F.cosine_similarity (eps 1e-8) up to where the clamp sits: clamping the squared norm
// keeps the gradient finite at a zero vector (d|a|/da is 0/0 there); it is 0 there instead.
at::Tensor cosine(const at::Tensor& a, const at::Tensor& b, double eps = 1e-8);

}  // namespace fmam::loss
