// The ResNet family the nodes share (torchvision's ResNet-18/34/50 and Wide-ResNet-50-2) and the
// trainable networks built from it, behind an interface free of torch/torch.h: only
// networks/resnet.cpp includes the torch::nn headers.
//
// Trainable networks (random init from a seed, names as torchvision / RD4AD name them):
//   make_resnet            torchvision ResNet up to layerN: the "symmetric" (STFPM-like) student
//   make_reverse_student   RD4AD's OCBE bottleneck ("bn.*") + de_resnet decoder ("decoder.*")
//   make_feature_map       FMAM's per-level two-layer 1x1-conv MLP ("level<j>.fc1/fc2.*")
// The frozen teacher does not use these modules: BackboneNode runs a BatchNorm-folded copy.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "framework/node.h"
#include "framework/stateful.h"

namespace torch {
namespace nn {
class Module;
}
}  // namespace torch

namespace fmam {

enum class Arch { kResNet18, kResNet34, kResNet50, kWideResNet50_2 };

// For an `arch` param: resnet18 | resnet34 | resnet50 | wide_resnet50_2.
Choices<Arch> arch_choices();
const char* arch_name(Arch a);

struct ArchSpec {
  bool bottleneck;      // Bottleneck blocks (expansion 4) instead of BasicBlocks
  int blocks[4];        // blocks per layer
  int width_per_group;  // 64; 128 for the wide variant (bottleneck width = planes * wpg / 64)
};
const ArchSpec& arch_spec(Arch a);

// Output channels of layer `layer` (1..4): 64/128/256/512, x4 for the bottleneck archs.
int64_t layer_channels(Arch a, int layer);
// Output height (or width) of layer `layer` for an input of `n` pixels: every stride-2 conv and
// the max-pool map n to ceil(n / 2), so layerN gives ceil(n / 2^(N+1)).
int64_t layer_size(int64_t n, int layer);

// Per-frame [C, H, W] of the given layers' outputs for an h x w input (-1: unknown).
std::vector<std::vector<int64_t>> pyramid_dims(Arch a, const std::vector<int>& layers, int64_t h, int64_t w);

// Comparing two pyramids (level_dims, check_levels_match): networks/pyramid_check.h.

// Parses a `layers` param: names from layer1..layer4, strictly increasing (the pyramid is
// ordered shallow to deep), at least one. Returns the layer numbers. Throws Error starting with
// `param "layers": `.
std::vector<int> parse_layers(const std::vector<std::string>& names);

// torch's conv_transpose2d for a 2x2 kernel with stride 2, no bias, no groups (RD4AD's
// upsampling): x [B, Cin, H, W], w [Cin, Cout, 2, 2] -> [B, Cout, 2H, 2W], as one matrix product.
// libtorch 1.13 runs conv_transpose2d on the CPU through its slow reference kernel (a quarter of
// the RD student's time) and cannot run it in bfloat16; a product runs on oneDNN/BLAS in either.
// Autograd and autocast see ordinary ops.
// `bias` (optional, [Cout]) is added to every output pixel.
at::Tensor conv_transpose2x2(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias = {});
// The same op for inference (the BatchNorm-folded eval path), its weights rearranged once.
// Channels-last input gives channels-last output through one product whose columns are ordered
// (ki, kj, cout): the reshuffle then copies runs of 2 * Cout values instead of single ones. In
// float32 that product runs on oneDNN as a 1x1 convolution (libtorch gives at::mm to BLAS, which
// is OpenBLAS on Debian and 1.4-1.6x slower here). NCHW input goes to conv_transpose2x2. The
// weights' dtype (float32 or bfloat16) is the arithmetic's.
class ConvTranspose2x2 {
 public:
  ConvTranspose2x2(const at::Tensor& w, const at::Tensor& bias = {});  // w [Cin, Cout, 2, 2], bias [Cout]
  at::Tensor operator()(const at::Tensor& x) const;                    // [B, Cin, H, W] -> [B, Cout, 2H, 2W]

 private:
  at::Tensor w_, b_;           // as given: NCHW input
  at::Tensor wk_, bk_, w1x1_;  // channels-last input: columns (ki, kj, cout); float32's 1x1 conv
};

// A trainable network. Copies share the same module.
class Network {
 public:
  struct Impl;
  explicit Network(std::shared_ptr<Impl> impl) : impl_(std::move(impl)) {}

  // Runs the network. The caller picks the grad mode (InferenceMode or not). Outputs are float32.
  std::vector<at::Tensor> forward(const std::vector<at::Tensor>& in) const;
  // forward() with every BatchNorm in eval mode for this call only: normalised by the running
  // statistics, which it leaves as they are; gradients still flow. For a training twin that
  // sees other data (synthetic defects) than the statistics inference should use.
  std::vector<at::Tensor> forward_with_running_stats(const std::vector<at::Tensor>& in) const;
  // The arithmetic of forward() in training mode on the CPU (see Precision); in eval mode, or
  // on another device, it is float32 whatever this says. Copies share it.
  void set_precision(Precision p) const;
  // The arithmetic of forward() in eval mode. kBFloat16Mixed converts the conv weights to
  // bfloat16 in place, once (load_state() still takes float32 states; named_state() then gives
  // bfloat16 conv weights), and runs the convolutions in bfloat16; outputs are float32. For
  // inference-only networks: train(true) is an error until set back to kFloat32. With BatchNorm
  // folding on, the weights stay float32 and the folded copies are made in bfloat16 instead.
  void set_inference_precision(Precision p) const;
  // Eval-mode forward() with every BatchNorm folded into the conv before it (w * s and
  // beta - mean * s, s = gamma / sqrt(var + eps); as torch.jit.freeze does): one pass over
  // memory less per BatchNorm. The folded copies are made at the first eval forward after
  // load_state(), train(), set_inference_precision() or a move, in the inference precision;
  // training-mode forwards never use them. Set it before set_inference_precision().
  void set_batchnorm_folding(bool on) const;
  // Whether the modules hold folded weights now (diagnostics and tests).
  bool is_folded() const;

  // Parameters and buffers (BatchNorm running stats, num_batches_tracked) in the order of
  // Python's state_dict(), with its dotted names.
  std::vector<std::pair<std::string, at::Tensor>> named_state() const;
  // Copies `state` into the network. Every name of named_state() must be there with its shape,
  // and nothing else; otherwise throws Error listing the missing / mis-shaped / unexpected names
  // (nothing is copied then).
  void load_state(const std::map<std::string, at::Tensor>& state) const;
  // Trainable tensors, for an optimizer.
  std::vector<at::Tensor> parameters() const;
  int64_t parameter_count() const;
  void train(bool on) const;
  bool is_training() const;
  // The torch module itself (include <torch/nn/module.h> to use it).
  torch::nn::Module& module() const;
  // Stores 4-D weights in NHWC memory (oneDNN's fast path for some nets; measure).
  void to_channels_last() const;
  // Moves parameters and buffers to `device` (no-op when already there).
  void to(at::Device device) const;
  at::Device device() const;

 private:
  std::vector<at::Tensor> forward_bf16_weights(const std::vector<at::Tensor>& in) const;
  void ensure_folded() const;
  void drop_folded() const;

  std::shared_ptr<Impl> impl_;
};

// torchvision ResNet `arch` up to layer max(out_layers), random init (torchvision's scheme:
// kaiming_normal fan_out for convs, BatchNorm 1/0). forward({image}) -> the out_layers' outputs.
Network make_resnet(Arch arch, const std::vector<int>& out_layers, uint64_t seed);

// RD4AD (Deng & Li, CVPR 2022) for teacher `arch`: OCBE (strided 3x3 convs bring layer1 and
// layer2 to layer3's size, concat, one ResNet layer at 512*expansion channels, stride 2), then the
// de_resnet decoder (layer1 -> layer2 -> layer3, 2x2 transposed-conv upsampling). forward(
// {layer1, layer2, layer3 features}) -> {decoder layer3, layer2, layer1}: shallow to deep, the
// teacher's order and shapes. Where a teacher level has an odd size (inputs not divisible by 32),
// the decoder's 2x upsampling overshoots by one row/column, which is cropped (bottom/right) to the
// teacher level's size before the next decoder layer. RD4AD's unused bn.conv4/bn.bn4 are left out.
Network make_reverse_student(Arch arch, uint64_t seed);

// FMAM's feature mapping: per level j, 1x1 conv C_j -> hidden_j, ReLU, 1x1 conv hidden_j -> C_j
// (with biases; PyTorch's default Conv2d init). forward(levels) -> mapped levels.
Network make_feature_map(const std::vector<int64_t>& channels, const std::vector<int64_t>& hidden, uint64_t seed);

}  // namespace fmam
