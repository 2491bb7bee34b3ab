#include "nodes/loss_util.h"

#include <ATen/ATen.h>

#include <string>

#include "framework/error.h"

namespace fmam::loss {

at::Tensor autograd_safe(const at::Tensor& t) {
  if (!t.defined() || !t.is_inference()) return t;
  // clone() outside InferenceMode returns a normal tensor (same values, no autograd history).
  return t.clone();
}

at::Tensor cosine(const at::Tensor& a, const at::Tensor& b, double eps) {
  const double eps2 = eps * eps;
  at::Tensor na = at::sqrt(at::clamp_min((a * a).sum(1), eps2));
  at::Tensor nb = at::sqrt(at::clamp_min((b * b).sum(1), eps2));
  return (a * b).sum(1) / (na * nb);
}

}  // namespace fmam::loss
