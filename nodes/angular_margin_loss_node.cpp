#include "nodes/angular_margin_loss_node.h"

#include <ATen/ATen.h>

#include <cmath>

#include "networks/pyramid_check.h"
#include "nodes/loss_util.h"

namespace fmam {

namespace {

using P = AngularMarginLossNode::Params;
constexpr const char* kNeedsMask =
    "is not connected, and region \"mask\" needs it; connect the synthetic-defect mask or set "
    "region \"all\"";

// x's value with its gradient scaled by g (g = 1: x itself; 0: detached).
at::Tensor scale_gradient(const at::Tensor& x, float g) {
  if (g == 1.0f) return x;
  const at::Tensor fixed = x.detach();
  return g == 0.0f ? fixed : fixed + double(g) * (x - fixed);
}

// The per-cell hinge of one level, [B, H, W].
at::Tensor hinge(const at::Tensor& t, const at::Tensor& s_syn, const at::Tensor& t_syn, const P& p) {
  if (p.distance == AngularMarginLossNode::Distance::kAngular) {
    // Only theta_p goes through acos; cos theta_n is used as it is (Eq. 5 needs no angle of it).
    const at::Tensor cos_n = loss::cosine(t, t_syn);
    const double theta_m = double(p.margin) * M_PI / 180.0;
    if (p.positive == AngularMarginLossNode::Positive::kNone) return at::clamp_min(cos_n - std::cos(theta_m), 0.0);
    const at::Tensor cos_p = scale_gradient(loss::cosine(t, s_syn), p.theta_p_grad);
    // acos' slope is -1/sqrt(1 - x^2): infinite at +-1 (identical or opposite vectors), so clamp
    // first. Outside the clamp the gradient is 0, inside it is at most 1/sqrt(2 eps).
    const at::Tensor theta_p = at::acos(at::clamp(cos_p, -1.0 + p.eps, 1.0 - p.eps));
    // Eq. 6 keeps angles in [0, pi]; past pi, cos would rise again and reward a worse student.
    const at::Tensor angle = at::clamp_max(theta_p + theta_m, M_PI);
    return at::clamp_min(cos_n - at::cos(angle), 0.0);
  }
  // Table 3's L1ML / L2ML: a Euclidean triplet loss on the raw distances. linalg_vector_norm's
  // backward is 0 (not NaN) at a zero difference, as is abs'.
  const double ord = p.distance == AngularMarginLossNode::Distance::kL1 ? 1.0 : 2.0;
  const at::Tensor d_n = at::linalg_vector_norm(t - t_syn, ord, {1});
  if (p.positive == AngularMarginLossNode::Positive::kNone) return at::clamp_min(double(p.l_margin) - d_n, 0.0);
  const at::Tensor d_p = scale_gradient(at::linalg_vector_norm(t - s_syn, ord, {1}), p.theta_p_grad);
  return at::clamp_min(d_p + double(p.l_margin) - d_n, 0.0);
}

}  // namespace

Shapes AngularMarginLossNode::infer(const Params& p, const Shapes& in) {
  const Shape& t = in.at(kTeacher);
  check_pyramid_shapes(t, kTeacher.name, in.at(kStudentSynthetic), kStudentSynthetic.name);
  check_pyramid_shapes(t, kTeacher.name, in.at(kTeacherSynthetic), kTeacherSynthetic.name);
  if (p.region == Region::kMask && !in.has(kMask)) throw PortError("input", kMask.name, kNeedsMask);
  if (in.has(kMask)) {
    const Shape& m = in.at(kMask);
    if (m.known && m.dims.size() == 3 && m.dims[0] != -1 && m.dims[0] != 1)
      throw PortError("input", kMask.name, "has " + std::to_string(m.dims[0]) + " channels; expected 1, [1, H, W]");
  }
  return {{kLoss, Shape::of({})}};  // per frame a scalar: [B] per batch
}

at::Tensor AngularMarginLossNode::compute(const std::vector<at::Tensor>& teacher,
                                          const std::vector<at::Tensor>& student_synthetic,
                                          const std::vector<at::Tensor>& teacher_synthetic, const at::Tensor& mask,
                                          const Params& p) {
  check_pyramid(teacher, kTeacher.name, student_synthetic, kStudentSynthetic.name);
  check_pyramid(teacher, kTeacher.name, teacher_synthetic, kTeacherSynthetic.name);
  const int64_t batch = teacher[0].size(0);
  at::Tensor defect;  // [B, 1, H, W], 1 where the synthesis changed the image
  if (p.region == Region::kMask) {
    if (!mask.defined()) throw PortError("input", kMask.name, kNeedsMask);
    if (mask.dim() != 4 || mask.size(1) != 1 || mask.size(0) != batch) {
      std::string got;
      for (int64_t i = 0; i < mask.dim(); ++i) got += (i ? ", " : "") + std::to_string(mask.size(i));
      throw PortError("input", kMask.name, "must be [B, 1, H, W] with B = " + std::to_string(batch) + ", got [" + got + "]");
    }
    // The mask is data, never differentiated; binarised so 0/1, 0/255 and bool masks all work.
    defect = loss::autograd_safe(mask).detach().to(teacher[0].device()).gt(0.5);
  }

  at::Tensor total;
  for (size_t j = 0; j < teacher.size(); ++j) {
    const at::Tensor d = hinge(loss::autograd_safe(teacher[j]), loss::autograd_safe(student_synthetic[j]),
                               loss::autograd_safe(teacher_synthetic[j]), p);  // [B, H_j, W_j]
    at::Tensor level;                                                          // [B]
    if (p.region == Region::kAll) {
      level = d.mean({1, 2});
    } else {
      // Area pooling: the fraction of each cell covered by the defect (exact when the image size
      // is a multiple of the level's, as 256 -> 64, 32, 16).
      const at::Tensor cover = at::adaptive_avg_pool2d(defect.to(d.scalar_type()), {d.size(1), d.size(2)}).squeeze(1);
      const at::Tensor w = p.mask_pooling == MaskPooling::kThreshold ? cover.gt(0.5).to(d.scalar_type()) : cover;
      // An empty mask gives 0 / floor = 0: no NaN, and a zero gradient (w carries no grad).
      level = (w * d).sum({1, 2}) / at::clamp_min(w.sum({1, 2}), 1e-6);
    }
    total = total.defined() ? total + level : level;
  }
  return total / double(teacher.size());
}

void AngularMarginLossNode::process(Context& ctx) {
  at::Tensor mask;
  if (kMask(ctx).has()) mask = kMask(ctx).get().t;
  kLoss(ctx).send(Tensor{compute(kTeacher(ctx).get().levels, kStudentSynthetic(ctx).get().levels,
                                 kTeacherSynthetic(ctx).get().levels, mask, params_)});
}

FMAM_REGISTER_NODE(AngularMarginLossNode);

}  // namespace fmam
