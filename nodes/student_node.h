// The student M_s (paper Sec. 3.1, 4.1.2), randomly initialised from `seed`, two kinds:
//   reverse   RKD, RD4AD (Deng & Li, CVPR 2022): reads the teacher's layer1-3 pyramid, OCBE
//             bottleneck + de_resnet decoder, outputs the decoder's three levels (shallow to deep).
//   symmetric NKD (STFPM-like): a ResNet of the teacher's shape reading the image, its layer
//   outputs.
// Either way the output pyramid has the teacher's levels, channels and sizes (networks/resnet.h has
// the architectures and the odd-size cropping of the decoder).
// Learned state: named_state()/load_state() for model files, train()/parameters()/module() for
// training. In eval mode (the default) frames run under c10::InferenceMode; in training mode
// with autograd (teacher inputs, which are inference tensors, are cloned first), one frame at a
// time (BatchNorm updates its running stats). Param "share" makes a second Student (the training
// graph's branch on synthetic images) train the same weights as the one it names.
#pragma once

#include <c10/core/MemoryFormat.h>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "framework/node.h"
#include "framework/stateful.h"
#include "framework/tensor_types.h"
#include "networks/resnet.h"

namespace fmam {

class StudentNode final : public Node, public Trainable {
 public:
  enum class Kind { kReverse, kSymmetric };
  struct Params {
    Kind kind = Kind::kReverse;
    Arch arch = Arch::kResNet18;
    std::vector<std::string> layers = {"layer1", "layer2", "layer3"};
    int seed = 0;
    std::string share;
    bool update_bn_stats = true;
  };
  static constexpr In<FeaturePyramid> kFeatures{"features"};
  static constexpr In<Tensor> kImage{"image"};
  static constexpr Out<FeaturePyramid> kOut{"features"};
  static Contract contract() {
    return Contract("Student")
        .doc("trainable student: RD4AD decoder of the teacher's features, or a ResNet of the image")
        .in(kFeatures, "kind reverse: the teacher's layer1..layer3 pyramid", /*optional=*/true)
        .in(kImage, "kind symmetric: the normalised image, float32 [B, 3, H, W]", /*optional=*/true)
        .out(kOut, "the student's pyramid: the teacher's levels, channels and sizes, shallow to deep")
        .param(&Params::kind, "kind",
               "reverse: RD4AD (reads input \"features\"); symmetric: ResNet like the teacher "
               "(reads input \"image\")",
               Choices<Kind>{{"reverse", Kind::kReverse}, {"symmetric", Kind::kSymmetric}})
        .param(&Params::arch, "arch", "the teacher's architecture", arch_choices())
        .param(&Params::layers, "layers",
               "the teacher's layers, from layer1..layer4, increasing (reverse: layer1, layer2, "
               "layer3)")
        .param(&Params::seed, "seed", "random initialisation seed", Range{0, 2147483647})
        .param(&Params::share, "share",
               "id of a Student declared earlier in the graph whose weights this node uses (a "
               "training graph's synthetic branch); \"\": its own weights")
        .param(&Params::update_bn_stats, "update_bn_stats",
               "training: BatchNorm normalises by the batch and updates its running statistics "
               "(true), or normalises by the running statistics and leaves them (false: for a "
               "twin that sees synthetic images, which would shift the statistics inference uses)")
        // Unlimited: eval frames are independent (2 frames on 2 cores). A training run makes
        // every Trainable node serial (ExecutionPlan::serial).
        .concurrency(Concurrency::kUnlimited)
        .batchable();
  }
  static Shapes infer(const Params& p, const Shapes& in);
  explicit StudentNode(const Params& p);
  // In a graph: the same, plus param "share" (the executor hands over its NodeEnv) and the run's
  // inference precision (NodeEnv::precision).
  StudentNode(const Params& p, NodeEnv& env);
  void process(Context& ctx) override;

  // The work itself, for callers outside a graph: kind reverse takes the teacher's levels,
  // kind symmetric {image}. Grad mode follows is_training(). Eval mode is safe from several
  // threads; training mode is for one caller at a time (it updates BatchNorm's statistics).
  std::vector<at::Tensor> forward(std::vector<at::Tensor> in);

  // ---- learned state ----
  // Parameters and buffers with Python state_dict names: reverse "bn.*" (OCBE) and "decoder.*",
  // as RD4AD's checkpoints {'bn': ..., 'decoder': ...} flatten; symmetric torchvision names.
  std::vector<std::pair<std::string, at::Tensor>> named_state() const override { return net_.named_state(); }
  // Copies a state in; throws Error listing missing / mis-shaped / unexpected names.
  void load_state(const std::map<std::string, at::Tensor>& state) override { net_.load_state(state); }
  // Training mode (autograd, BatchNorm batch statistics) or eval mode (the default).
  void train(bool on) { net_.train(on); }
  void set_training(bool on) override { train(on); }
  bool set_precision(Precision p) override {
    net_.set_precision(p);
    return true;
  }
  bool is_training() const { return net_.is_training(); }
  // Trainable parameters, for an optimizer.
  std::vector<at::Tensor> parameters() const override { return net_.parameters(); }
  // The torch module (include <torch/nn/module.h> to use it), and the network wrapper.
  torch::nn::Module& module() const { return net_.module(); }
  const Network& network() const { return net_; }
  // Moves the network to a device (the inputs must then be there too).
  void to(at::Device device) { net_.to(device); }

 private:
  Params params_;
  std::vector<int> layers_;
  Network net_;
  // The memory format of the inputs it is given and of its weights (see the constructors).
  at::MemoryFormat format_ = at::MemoryFormat::Contiguous;
};

}  // namespace fmam
