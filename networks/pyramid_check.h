// Whether two feature pyramids fit each other (teacher vs student, teacher vs its synthetic twin,
// a param's channels vs an input): one comparison for every node, at load time on per-frame
// shapes and at run time on tensors, so a mismatch reads the same whenever it is caught:
//   input "student": level 2 has 512 channels, input "teacher" has 256
//   input "student": level 0 is 63x64 (HxW), input "teacher" is 64x64
// Levels are numbered from 0, shallow to deep; the deepest differing level is named, since its
// channel count names the backbone best (64/128/256 vs 256/512/1024 ...).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "framework/shape.h"

namespace fmam {

// Per-frame [C, H, W] of each level; -1 for a dim not known yet.
using LevelDims = std::vector<std::vector<int64_t>>;

// [C, H, W] of each level of a batch of pyramids ([B, C, H, W] tensors); {-1, -1, -1} for a
// level that is not 4-D.
LevelDims level_dims(const std::vector<at::Tensor>& levels);

// Checks that pyramid `b` (input `b_name`) has as many levels as `a` (described by `a_what`,
// e.g. `input "teacher"` or `param "channels"`), and the same channels per level (and, with
// `spatial`, the same H x W). -1 dims, and levels that are not [C, H, W] (their producer's error),
// match anything. Throws PortError on input `b_name`.
void check_levels_match(const LevelDims& a, const std::string& a_what, const LevelDims& b, const char* b_name, bool spatial);

// Load time: check_levels_match on two inputs' shapes, channels and H x W; passes when either
// shape is unknown.
void check_pyramid_shapes(const Shape& ref, const char* ref_name, const Shape& other, const char* other_name);

// Run time, on [B, C_j, H_j, W_j] tensors: level count, that every level is 4-D, batch, then
// channels and H x W (as check_levels_match), then device. Throws PortError on the input at
// fault, e.g.   input "student": level 0 has batch 2, input "teacher" has 1
void check_pyramid(const std::vector<at::Tensor>& ref, const char* ref_name, const std::vector<at::Tensor>& other,
                   const char* other_name);

}  // namespace fmam
