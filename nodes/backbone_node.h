// The frozen teacher M_t (paper Sec. 3.1): a torchvision ResNet pre-trained on ImageNet, run up
// to the last layer asked for, whose layer outputs form the feature pyramid (shallow to deep).
// Weights are torchvision state dicts (full files or truncated ones such as
// ../shared/weights/resnet18_imagenet1k_v1_to_layer3.pth); BatchNorm (eval mode, eps 1e-5) is
// folded into the convs at load, so a frame costs convs, ReLUs and one max-pool only, under
// c10::InferenceMode. Output sizes follow the convs: layerN is ceil(H / 2^(N+1)) x ceil(W /
// 2^(N+1)).
#pragma once

#include <c10/core/MemoryFormat.h>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "framework/node.h"
#include "framework/stateful.h"
#include "framework/tensor_types.h"
#include "networks/resnet.h"

namespace fmam {

class Int8Backbone;

class BackboneNode final : public Node, public Fingerprinted, public Int8Quantizable {
 public:
  struct Params {
    Arch arch = Arch::kResNet18;
    std::vector<std::string> layers = {"layer1", "layer2", "layer3"};
    std::string weights;
    // Compute in NHWC (oneDNN's faster layout here); outputs are contiguous NCHW either way.
    // resnet18 to layer3, batch 1, 256x256, 1 intra-op thread, CPU time per frame on the
    // project's 2-core AMD EPYC (Zen 4, AVX-512): NCHW 45 ms, NHWC 39 ms.
    bool channels_last = true;
  };
  static constexpr In<Tensor> kIn{"image"};
  static constexpr Out<FeaturePyramid> kOut{"features"};
  static Contract contract() {
    return Contract("Backbone")
        .doc("frozen ImageNet ResNet (teacher): image -> feature pyramid of the layers asked for")
        .in(kIn, "normalised image, float32 [B, 3, H, W]")
        .out(kOut,
             "one level per entry of `layers`, shallow to deep, [B, C_j, ceil(H/2^(j+1)), "
             "ceil(W/2^(j+1))]")
        .param(&Params::arch, "arch", "torchvision architecture", arch_choices())
        .param(&Params::layers, "layers", "layers to output, from layer1..layer4, increasing")
        .param(&Params::weights, "weights",
               "torchvision state dict (.pth): a path, a file name to search for, or \"\" for the "
               "arch's default names (resnet18-f37072fd.pth, resnet18_imagenet1k_v1_to_layer3.pth, "
               "...) in $FMAM_WEIGHTS, torchvision's cache and ../shared/weights")
        .param(&Params::channels_last, "channels_last",
               "compute in NHWC memory format (faster with oneDNN); outputs are NCHW either way")
        .concurrency(Concurrency::kUnlimited)  // frozen: a pure function of the image
        .deterministic()
        .batchable();
  }
  static Shapes infer(const Params& p, const Shapes& in);
  explicit BackboneNode(const Params& p);
  // In a graph: the same, computing in the run's precision (NodeEnv::precision; bf16-mixed
  // keeps a bfloat16 copy of the folded weights: ~4x faster convolutions on AVX512-BF16).
  BackboneNode(const Params& p, NodeEnv& env);
  void process(Context& ctx) override;

  // The work itself, for callers outside a graph: image [B, 3, H, W] -> levels.
  std::vector<at::Tensor> forward(const at::Tensor& image) const;
  // The weights file loaded, and its SHA-256 (hex, computed on first call), for a model file to
  // record which teacher it was trained against.
  const std::string& weights_path() const { return weights_path_; }
  const std::string& weights_sha256() const;

  // For model files: "<arch> <layers> probe <mean std per level> file <name>", where the probe
  // numbers are the features of a fixed synthetic image. same_as() compares them with a relative
  // tolerance of 1e-3, so the shared truncated weights and a full torchvision file of the same
  // network match, while other weights do not.
  std::string fingerprint() const override;
  bool same_as(const std::string& recorded) const override;

  // int8 (backbone_int8.h): calibration and the int8 network.
  void observe_activation_ranges(bool on) override;
  std::map<std::string, at::Tensor> activation_ranges() const override;
  // This CPU's activation codes (int8_activation_max()), or those given.
  void use_int8(const std::map<std::string, at::Tensor>& ranges) override;
  void use_int8(const std::map<std::string, at::Tensor>& ranges, int activation_max);
  bool runs_int8() const { return int8_ != nullptr; }

  struct Net;  // the BatchNorm-folded network (backbone_net.h)

 private:
  std::vector<at::Tensor> run(const Net& net, const at::Tensor& image) const;

  std::vector<int> layers_;
  std::string weights_path_;
  std::shared_ptr<const Net> net_;            // float32
  std::shared_ptr<const Net> fast_net_;       // what forward() runs: net_, or its bfloat16 copy
  std::shared_ptr<const Int8Backbone> int8_;  // what forward() runs instead, once use_int8() was called
  std::atomic<bool> observing_{false};
  mutable std::mutex ranges_mutex_;
  mutable std::map<std::string, std::pair<float, float>> observed_;  // guarded by ranges_mutex_; forward() widens it
  // The outputs' memory format: channels-last in inference graphs (see the constructor), else NCHW.
  at::MemoryFormat out_format_ = at::MemoryFormat::Contiguous;
  mutable std::once_flag sha_once_;
  mutable std::string sha256_;
  Arch arch_;
  mutable std::once_flag fingerprint_once_;
  mutable std::string fingerprint_;
};

}  // namespace fmam
