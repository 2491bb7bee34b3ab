// FMAM's feature mapping f^j (paper Sec. 3.2, 4.1.3: "two-layer MLPs are good enough"): per
// level j, per pixel, C_j -> hidden_j -> C_j with a ReLU between (1x1 convs with biases), where
// hidden_j = round(hidden_ratio * C_j). ONE set of weights maps the teacher's and the student's
// pyramids alike, so both land in the same space before the cosine discrepancy. A training graph
// maps the synthetic image's pyramids with a second FeatureMap node that names this one in param
// "share" (the same weights, as Student's "share"), so the node has the same two ports everywhere.
// Learned state: named_state()/load_state() ("level<j>.fc1.weight", ...), train()/parameters()/
// module(). Eval mode (default) runs under c10::InferenceMode; training mode with autograd
// (inference-tensor inputs, e.g. the teacher's, are cloned first).
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "framework/node.h"
#include "framework/stateful.h"
#include "framework/tensor_types.h"
#include "networks/resnet.h"

namespace fmam {

class FeatureMapNode final : public Node, public Trainable {
 public:
  enum class Init { kRandom, kIdentity };
  struct Params {
    std::vector<int> channels = {64, 128, 256};  // resnet18 layer1..3
    float hidden_ratio = 1.0f;
    int seed = 0;
    Init init = Init::kRandom;
    std::string share;
  };
  static constexpr In<FeaturePyramid> kInTeacher{"teacher"};
  static constexpr In<FeaturePyramid> kInStudent{"student"};
  static constexpr Out<FeaturePyramid> kOutTeacher{"teacher"};
  static constexpr Out<FeaturePyramid> kOutStudent{"student"};
  static Contract contract() {
    return Contract("FeatureMap")
        .doc("per-level two-layer 1x1-conv MLP, one set of weights for teacher and student")
        .in(kInTeacher, "the teacher's pyramid")
        .in(kInStudent, "the student's pyramid: the teacher's levels and channels")
        .out(kOutTeacher, "f(teacher), same shapes")
        .out(kOutStudent, "f(student), same shapes")
        .param(&Params::channels, "channels",
               "channels C_j per level, shallow to deep (resnet18/34 layer1..3: 64, 128, 256; "
               "resnet50, wide_resnet50_2: 256, 512, 1024)")
        .param(&Params::hidden_ratio, "hidden_ratio", "hidden width per level as a multiple of C_j", Range{0.0625f, 16.0f})
        .param(&Params::seed, "seed", "random initialisation seed", Range{0, 2147483647})
        .param(&Params::init, "init",
               "random: PyTorch's default Conv2d init; identity: fc1 = fc2 = I, biases 0, so f(x) = "
               "relu(x) = x on the (post-ReLU, non-negative) features and training starts from the "
               "unmapped detector (needs hidden_ratio >= 1)",
               Choices<Init>{{"random", Init::kRandom}, {"identity", Init::kIdentity}})
        .param(&Params::share, "share",
               "id of a FeatureMap declared earlier in the graph whose weights this node uses (a "
               "training graph's synthetic branch, as Student's \"share\"; its hidden_ratio, seed and init "
               "are then that node's); \"\": its own weights")
        .concurrency(Concurrency::kUnlimited)  // no mutable state in forward (no BatchNorm)
        .batchable();
  }
  static Shapes infer(const Params& p, const Shapes& in);
  explicit FeatureMapNode(const Params& p);
  // In a graph: the same, plus param "share" and the run's inference precision
  // (NodeEnv::precision).
  FeatureMapNode(const Params& p, NodeEnv& env);
  void process(Context& ctx) override;

  // Maps one pyramid (either side), for callers outside a graph. Grad mode follows is_training().
  std::vector<at::Tensor> forward(std::vector<at::Tensor> levels) const;
  // hidden_j for the params.
  static std::vector<int64_t> hidden_widths(const Params& p);

  // ---- learned state (see StudentNode) ----
  std::vector<std::pair<std::string, at::Tensor>> named_state() const override { return net_.named_state(); }
  void load_state(const std::map<std::string, at::Tensor>& state) override { net_.load_state(state); }
  void train(bool on) { net_.train(on); }
  void set_training(bool on) override { train(on); }
  bool set_precision(Precision p) override {
    net_.set_precision(p);
    return true;
  }
  bool is_training() const { return net_.is_training(); }
  std::vector<at::Tensor> parameters() const override { return net_.parameters(); }
  torch::nn::Module& module() const { return net_.module(); }
  const Network& network() const { return net_; }
  void to(at::Device device) { net_.to(device); }

 private:
  Params params_;
  Network net_;
};

}  // namespace fmam
