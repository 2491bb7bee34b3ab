// The teacher in int8 (`--precision int8`): the BatchNorm-folded ResNet of backbone_net.h with
// per-output-channel symmetric int8 weights and per-tensor affine uint8 activations
// (networks/int8_ops.h), run by libtorch's quantized CPU kernels on the onednn engine (VNNI dot
// products), as PyTorch's post-training static quantization with the onednn qconfig would.
//
// Static quantization needs each activation's range before the first frame: `fmam quantize`
// runs the float32 network over defect-free images and records the range of every point where
// the int8 network (re)quantises. Points are named after torchvision's modules: "input", "stem"
// (conv1 + ReLU, before the max-pool, which keeps the scale), and per block "layer2.0.conv1"
// (after its ReLU), "layer2.0.conv2" (the last conv, before the residual add),
// "layer2.0.downsample" and "layer2.0.out" (after add + ReLU); bottleneck blocks add "conv3".
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/MemoryFormat.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "networks/int8_ops.h"
#include "nodes/backbone_node.h"

namespace fmam {

// Runs `net` (float32) on `x` [B, 3, H, W] up to layer `last_layer`, widening `ranges` at every
// point. Returns nothing: the caller runs the ordinary forward for the outputs.
void observe_ranges(const BackboneNode::Net& net, const at::Tensor& x, int last_layer, ActivationRanges& ranges);

// The names observe_ranges() records for `net` up to `last_layer`, in network order.
std::vector<std::string> activation_points(const BackboneNode::Net& net, int last_layer);

// The int8 network: weights quantised and packed once, at construction.
class Int8Backbone {
 public:
  // Activations take the codes 0..activation_max (int8_activation_max(): 255 with VNNI, else 127).
  // Throws Error naming the first point `ranges` lacks, or a range that is not finite (or when
  // libtorch has no onednn quantized engine).
  Int8Backbone(const BackboneNode::Net& net, int last_layer, const ActivationRanges& ranges, int activation_max);
  // image [B, 3, H, W] float32 -> the `layers` (1-based, increasing) as float32 in `out_format`.
  std::vector<at::Tensor> operator()(const at::Tensor& image, const std::vector<int>& layers, at::MemoryFormat out_format) const;

  struct Impl;

 private:
  std::shared_ptr<const Impl> impl_;
};

}  // namespace fmam
