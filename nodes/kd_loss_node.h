// Knowledge-distillation loss, Eq. 1: L_KD = (1/L) sum_j D(m_t^j, m_s^j), one value per image.
// D (Table 2), `distance`: "cos" (default) = 1 - cos along channels at each pixel, averaged over
// the pixels: the vector-wise D of Eq. 1-3 and the very map D^j the anomaly score is made of, so
// training lowers what inference measures. "cos_flat" = RD4AD's official loss: each level
// flattened to one vector per image, 1 - cos of those (RD4AD sums levels; we keep 1/L, a constant
// factor Adam all but ignores). "l1" / "l2" = mean |t - s| / mean (t - s)^2 over channels and
// pixels (F.l1_loss / F.mse_loss per image). Training only: runs on whole batches, autograd on.
#pragma once

#include <vector>

#include "framework/node.h"
#include "framework/tensor_types.h"

namespace fmam {

class KDLossNode final : public Node {
 public:
  enum class Distance { kCos, kCosFlat, kL1, kL2 };
  struct Params {
    Distance distance = Distance::kCos;
  };
  static constexpr In<FeaturePyramid> kTeacher{"teacher"};
  static constexpr In<FeaturePyramid> kStudent{"student"};
  static constexpr Out<Tensor> kLoss{"loss"};
  static Contract contract() {
    return Contract("KDLoss")
        .doc("knowledge-distillation loss (Eq. 1), one value per image")
        .in(kTeacher, "teacher features m_t (or f(m_t)), levels [B, C_j, H_j, W_j]")
        .in(kStudent, "student features m_s (or f(m_s)), the same level shapes")
        .out(kLoss, "per-image loss [B], differentiable")
        .param(&Params::distance, "distance",
               "cos: per-pixel 1 - cos over channels, mean over pixels; cos_flat: 1 - cos of each "
               "level flattened per image (RD4AD's code); l1 / l2: mean absolute / squared "
               "difference over channels and pixels",
               Choices<Distance>{
                   {"cos", Distance::kCos}, {"cos_flat", Distance::kCosFlat}, {"l1", Distance::kL1}, {"l2", Distance::kL2}})
        .concurrency(Concurrency::kUnlimited)  // pure function of its inputs
        .batchable();
  }
  static Shapes infer(const Params& p, const Shapes& in);
  explicit KDLossNode(const Params& p) : params_(p) {}
  void process(Context& ctx) override;

  // The loss itself, [B], for the trainer and tests. Throws PortError on mismatched pyramids.
  static at::Tensor compute(const std::vector<at::Tensor>& teacher, const std::vector<at::Tensor>& student, const Params& p);

 private:
  Params params_;
};

}  // namespace fmam
