// Angular margin loss (Sec. 3.3, Eq. 4-7), per feature vector, one value per image:
//   theta_p = angle(f_t(I), f_s(I')), theta_n = angle(f_t(I), f_t(I')),
//   D_AML = max(0, cos theta_n - cos(min(theta_p + theta_m, pi))), averaged over a region of
//   each level, then (1/L) sum_j. cos theta_p is clamped into [-1+eps, 1-eps] before acos.
// Departures from Eq. 6's positive pair: theta_p_grad scales the gradient that flows through
// theta_p (1: the paper; 0: the hinge keeps theta_p's value, so the same cells are active, but the
// mapping only learns to push f(t(I')) away from f(t(I))). The FMAM recipes use 0.5: there only the
// mappings learn from AML, and the whole pull damps what a defect changes in the student's output.
// positive "none" sets theta_p = 0 (the student's twin is unused; an ablation).
// region "mask" (default): only where I' was changed, since elsewhere f_t(I') = f_t(I), theta_n
// = 0 and the hinge cannot be met. The mask is area-pooled to each level; a cell counts when more
// than half of it is defect ("threshold") or with its coverage as weight ("coverage"). A level
// whose pooled mask is empty adds 0 (still divided by L). distance "l1"/"l2" (Table 3's
// L1ML/L2ML): the Euclidean triplet hinge max(0, |f_t - f_s'|_p + l_margin - |f_t - f_t'|_p).
#pragma once

#include <vector>

#include "framework/node.h"
#include "framework/tensor_types.h"

namespace fmam {

class AngularMarginLossNode final : public Node {
 public:
  enum class Region { kMask, kAll };
  enum class Distance { kAngular, kL1, kL2 };
  enum class MaskPooling { kThreshold, kCoverage };
  enum class Positive { kStudent, kNone };
  struct Params {
    float margin = 15.0f;  // theta_m, degrees (Table 5)
    Region region = Region::kMask;
    MaskPooling mask_pooling = MaskPooling::kThreshold;
    Distance distance = Distance::kAngular;
    float l_margin = 1.0f;  // margin of the l1 / l2 variants (torch's TripletMarginLoss default)
    float eps = 1e-6f;
    Positive positive = Positive::kStudent;
    float theta_p_grad = 1.0f;
  };
  static constexpr In<FeaturePyramid> kTeacher{"teacher"};
  static constexpr In<FeaturePyramid> kStudentSynthetic{"student_synthetic"};
  static constexpr In<FeaturePyramid> kTeacherSynthetic{"teacher_synthetic"};
  static constexpr In<Tensor> kMask{"mask"};
  static constexpr Out<Tensor> kLoss{"loss"};
  static Contract contract() {
    return Contract("AngularMarginLoss")
        .doc("angular margin loss (Eq. 4-7) on a synthetic anomaly, one value per image")
        .in(kTeacher, "f(m_t(I)): mapped teacher features of the normal image, [B, C_j, H_j, W_j]")
        .in(kStudentSynthetic, "f(m_s(I')): mapped student features of the synthetic image")
        .in(kTeacherSynthetic, "f(m_t(I')): mapped teacher features of the synthetic image")
        .in(kMask,
            "synthetic-defect mask [B, 1, H, W] at any resolution, set where > 0.5; "
            "needed by region \"mask\"",
            /*optional=*/true)
        .out(kLoss, "per-image loss [B], differentiable")
        .param(&Params::margin, "margin", "angular margin theta_m in degrees (distance angular)", Range{0.0f, 180.0f})
        .param(&Params::region, "region", "mask: average over the defect cells of each level; all: over every cell",
               Choices<Region>{{"mask", Region::kMask}, {"all", Region::kAll}})
        .param(&Params::mask_pooling, "mask_pooling",
               "mask at each level's size by area pooling; threshold: cells more than half "
               "covered count 1; coverage: each cell weighted by its covered fraction",
               Choices<MaskPooling>{{"threshold", MaskPooling::kThreshold}, {"coverage", MaskPooling::kCoverage}})
        .param(&Params::distance, "distance",
               "angular: Eq. 5; l1 / l2: triplet hinge on L1 / L2 distances (Table 3's L1ML, "
               "L2ML) with margin l_margin",
               Choices<Distance>{{"angular", Distance::kAngular}, {"l1", Distance::kL1}, {"l2", Distance::kL2}})
        .param(&Params::l_margin, "l_margin", "margin of the l1 / l2 distances, in feature units", Range{0.0f, 1e6f})
        .param(&Params::positive, "positive",
               "the positive pair: student: Eq. 6, theta_p = angle(f(t(I)), f(s(I'))) (the paper); none: "
               "theta_p = 0 (l1 / l2: d_p = 0), an ablation in which the loss only pushes f(t(I')) from "
               "f(t(I)) by the margin and the student's twin is ignored",
               Choices<Positive>{{"student", Positive::kStudent}, {"none", Positive::kNone}})
        .param(&Params::theta_p_grad, "theta_p_grad",
               "scale on the gradient through theta_p (d_p for l1 / l2), its value unchanged: 1 is the "
               "paper; 0 keeps the hinge's active cells but only pushes f(t(I')) away (an ablation); "
               "the FMAM recipes use 0.5, since only their mappings learn from AML (docs/RESULTS.md)",
               Range{0.0f, 1.0f})
        .param(&Params::eps, "eps",
               "cos theta_p is clamped into [-1+eps, 1-eps] before acos (whose slope is infinite "
               "at +-1)",
               Range{1e-7f, 0.1f})
        .concurrency(Concurrency::kUnlimited)  // pure function of its inputs
        .batchable();
  }
  static Shapes infer(const Params& p, const Shapes& in);
  explicit AngularMarginLossNode(const Params& p) : params_(p) {}
  void process(Context& ctx) override;

  // The loss itself, [B], for the trainer and tests. `mask` may be undefined when region is
  // "all". Throws PortError on mismatched inputs.
  static at::Tensor compute(const std::vector<at::Tensor>& teacher, const std::vector<at::Tensor>& student_synthetic,
                            const std::vector<at::Tensor>& teacher_synthetic, const at::Tensor& mask, const Params& p);

 private:
  Params params_;
};

}  // namespace fmam
