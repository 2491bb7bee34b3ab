#include "nodes/loss_util.h"

#include <ATen/ATen.h>

#include <string>

#include "framework/error.h"

namespace fmam::loss {

namespace {

std::string dims_str(at::IntArrayRef d) {
  std::string s;
  for (size_t i = 0; i < d.size(); ++i) s += (i ? "x" : "") + std::to_string(d[i]);
  return s;
}

std::string quoted(const char* port) { return std::string("input \"") + port + "\""; }

}  // namespace

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

void check_pyramid(const std::vector<at::Tensor>& ref, const char* ref_name,
                   const std::vector<at::Tensor>& other, const char* other_name) {
  if (other.size() != ref.size())
    throw PortError("input", other_name,
                    "has " + std::to_string(other.size()) + " levels, " + quoted(ref_name) +
                        " has " + std::to_string(ref.size()));
  if (ref.empty()) throw PortError("input", ref_name, "has no levels");
  for (size_t j = 0; j < ref.size(); ++j) {
    const at::Tensor& r = ref[j];
    const at::Tensor& o = other[j];
    const std::string lv = "level " + std::to_string(j);
    if (!r.defined() || r.dim() != 4)
      throw PortError("input", ref_name, lv + " must be [B, C, H, W], got " +
                                             (r.defined() ? "[" + dims_str(r.sizes()) + "]" : "none"));
    if (!o.defined() || o.dim() != 4)
      throw PortError("input", other_name, lv + " must be [B, C, H, W], got " +
                                               (o.defined() ? "[" + dims_str(o.sizes()) + "]" : "none"));
    if (o.size(0) != r.size(0))
      throw PortError("input", other_name,
                      lv + " has batch " + std::to_string(o.size(0)) + ", " + quoted(ref_name) +
                          " has " + std::to_string(r.size(0)));
    if (o.size(1) != r.size(1))
      throw PortError("input", other_name,
                      lv + " has " + std::to_string(o.size(1)) + " channels, " + quoted(ref_name) +
                          " has " + std::to_string(r.size(1)));
    if (o.size(2) != r.size(2) || o.size(3) != r.size(3))
      throw PortError("input", other_name,
                      lv + " is " + dims_str(o.sizes().slice(2)) + " (HxW), " + quoted(ref_name) +
                          " is " + dims_str(r.sizes().slice(2)));
    if (o.device() != r.device())
      throw PortError("input", other_name,
                      lv + " is on " + o.device().str() + ", " + quoted(ref_name) + " on " +
                          r.device().str());
  }
}

void check_pyramid_shapes(const Shape& ref, const char* ref_name, const Shape& other,
                          const char* other_name) {
  if (!ref.known || !other.known) return;
  if (other.levels.size() != ref.levels.size())
    throw PortError("input", other_name,
                    "has " + std::to_string(other.levels.size()) + " levels, " + quoted(ref_name) +
                        " has " + std::to_string(ref.levels.size()));
  for (size_t j = 0; j < ref.levels.size(); ++j) {
    const auto& r = ref.levels[j];
    const auto& o = other.levels[j];
    if (r.size() != 3 || o.size() != 3) continue;  // malformed shapes are their producer's error
    const std::string lv = "level " + std::to_string(j);
    if (r[0] != -1 && o[0] != -1 && r[0] != o[0])
      throw PortError("input", other_name,
                      lv + " has " + std::to_string(o[0]) + " channels, " + quoted(ref_name) +
                          " has " + std::to_string(r[0]));
    const bool h_differs = r[1] != -1 && o[1] != -1 && r[1] != o[1];
    const bool w_differs = r[2] != -1 && o[2] != -1 && r[2] != o[2];
    if (h_differs || w_differs)
      throw PortError("input", other_name,
                      lv + " is " + std::to_string(o[1]) + "x" + std::to_string(o[2]) +
                          " (HxW), " + quoted(ref_name) + " is " + std::to_string(r[1]) + "x" +
                          std::to_string(r[2]));
  }
}

}  // namespace fmam::loss
