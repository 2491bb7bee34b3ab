// Per-level discrepancy D^j = 1 - cos(f(m_t^j), f(m_s^j)) along channels, one map per level
// (paper Eq. 3, METHOD.md step 5): 0 where teacher and student agree, 2 where opposite.
// cos follows torch.nn.functional.cosine_similarity(dim=1, eps=1e-8) of torch 1.13: each vector
// is divided by max(||v||, eps) before the dot product, so a zero vector gives cos 0 (D = 1).
#pragma once

#include <vector>

#include "framework/node.h"
#include "framework/tensor_types.h"

namespace fmam {

class CosineDiscrepancyNode final : public Node {
 public:
  struct Params {};
  static constexpr In<FeaturePyramid> kInTeacher{"teacher"};
  static constexpr In<FeaturePyramid> kInStudent{"student"};
  static constexpr Out<FeaturePyramid> kOut{"maps"};
  static constexpr double kEps = 1e-8;  // torch's cosine_similarity default
  static Contract contract() {
    return Contract("CosineDiscrepancy")
        .doc("1 - cosine similarity along channels, per pixel and level")
        .in(kInTeacher, "the (mapped) teacher pyramid")
        .in(kInStudent, "the (mapped) student pyramid: the teacher's levels and shapes")
        .out(kOut, "one 1-channel map per level, [B, 1, H_j, W_j], values in [0, 2]")
        .concurrency(Concurrency::kUnlimited)  // a pure function of its inputs
        .batchable();
  }
  static Shapes infer(const Params& p, const Shapes& in);
  explicit CosineDiscrepancyNode(const Params&) {}
  void process(Context& ctx) override;

  // The work itself: keeps autograd when an input requires grad, else runs under InferenceMode.
  static std::vector<at::Tensor> compute(const std::vector<at::Tensor>& teacher, const std::vector<at::Tensor>& student);
};

}  // namespace fmam
