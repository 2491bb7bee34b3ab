// Tensor data types. Per frame a Tensor is [1, C, H, W] float32; a batch stacks frames on dim 0.
// A FeaturePyramid is one list-valued port: levels ordered shallow to deep (layer1, layer2, ...),
// each [1, C_j, H_j, W_j] per frame.
#pragma once

#include <ATen/core/Tensor.h>

#include <vector>

#include "framework/packet.h"

namespace fmam {

struct Tensor {
  at::Tensor t;
};
struct FeaturePyramid {
  std::vector<at::Tensor> levels;
};

FMAM_DATA_TYPE(Tensor, "Tensor");
FMAM_DATA_TYPE(FeaturePyramid, "FeaturePyramid");

}  // namespace fmam
