#include "nodes/kd_loss_node.h"

#include <ATen/ATen.h>

#include "networks/pyramid_check.h"
#include "nodes/loss_util.h"

namespace fmam {

Shapes KDLossNode::infer(const Params&, const Shapes& in) {
  check_pyramid_shapes(in.at(kTeacher), kTeacher.name, in.at(kStudent), kStudent.name);
  return {{kLoss, Shape::of({})}};  // per frame a scalar: [B] per batch
}

at::Tensor KDLossNode::compute(const std::vector<at::Tensor>& teacher, const std::vector<at::Tensor>& student, const Params& p) {
  check_pyramid(teacher, kTeacher.name, student, kStudent.name);
  at::Tensor total;
  for (size_t j = 0; j < teacher.size(); ++j) {
    const at::Tensor t = loss::autograd_safe(teacher[j]);
    const at::Tensor s = loss::autograd_safe(student[j]);
    const int64_t b = t.size(0);
    at::Tensor d;  // [B]
    switch (p.distance) {
      case Distance::kCos: d = (1 - loss::cosine(t, s)).mean({1, 2}); break;
      case Distance::kCosFlat:
        // RD4AD: cos(a.view(B, -1), b.view(B, -1)); reshape, as levels may not be contiguous.
        d = 1 - loss::cosine(t.reshape({b, -1}), s.reshape({b, -1}));
        break;
      case Distance::kL1: d = (t - s).abs().mean({1, 2, 3}); break;
      case Distance::kL2: d = (t - s).square().mean({1, 2, 3}); break;
    }
    total = total.defined() ? total + d : d;
  }
  return total / double(teacher.size());
}

void KDLossNode::process(Context& ctx) {
  kLoss(ctx).send(Tensor{compute(kTeacher(ctx).get().levels, kStudent(ctx).get().levels, params_)});
}

FMAM_REGISTER_NODE(KDLossNode);

}  // namespace fmam
