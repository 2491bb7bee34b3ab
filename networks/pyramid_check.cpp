#include "networks/pyramid_check.h"

#include "framework/error.h"

namespace fmam {

namespace {

std::string quoted(const char* port) { return std::string("input \"") + port + "\""; }

std::string dims_str(at::IntArrayRef d) {
  std::string s;
  for (size_t i = 0; i < d.size(); ++i) s += (i ? "x" : "") + std::to_string(d[i]);
  return "[" + s + "]";
}

void check_level_count(size_t a, const std::string& a_what, size_t b, const char* b_name) {
  if (a != b) throw PortError("input", b_name, "has " + std::to_string(b) + " levels, " + a_what + " has " + std::to_string(a));
}

// Each level a [B, C, H, W] tensor with the batch of `ref`'s level.
void check_ranks_and_batch(const std::vector<at::Tensor>& ref, const char* ref_name, const std::vector<at::Tensor>& other,
                           const char* other_name) {
  for (size_t j = 0; j < ref.size(); ++j) {
    const std::string lv = "level " + std::to_string(j);
    for (const auto& [t, name] : {std::pair(ref[j], ref_name), std::pair(other[j], other_name)})
      if (!t.defined() || t.dim() != 4)
        throw PortError("input", name, lv + " must be [B, C, H, W], got " + (t.defined() ? dims_str(t.sizes()) : "none"));
    if (other[j].size(0) != ref[j].size(0))
      throw PortError("input", other_name,
                      lv + " has batch " + std::to_string(other[j].size(0)) + ", " + quoted(ref_name) + " has " +
                          std::to_string(ref[j].size(0)));
  }
}

}  // namespace

LevelDims level_dims(const std::vector<at::Tensor>& levels) {
  LevelDims out;
  for (const auto& t : levels) {
    if (t.defined() && t.dim() == 4)
      out.push_back({t.size(1), t.size(2), t.size(3)});
    else
      out.push_back({-1, -1, -1});
  }
  return out;
}

void check_levels_match(const LevelDims& a, const std::string& a_what, const LevelDims& b, const char* b_name, bool spatial) {
  check_level_count(a.size(), a_what, b.size(), b_name);
  auto differ = [&](size_t j, size_t k) { return a[j][k] >= 0 && b[j][k] >= 0 && a[j][k] != b[j][k]; };
  auto hw = [](const std::vector<int64_t>& v) { return std::to_string(v[1]) + "x" + std::to_string(v[2]); };
  for (size_t j = a.size(); j-- > 0;) {  // deepest first (see the header)
    if (a[j].size() != 3 || b[j].size() != 3) continue;
    const std::string lv = "level " + std::to_string(j);
    if (differ(j, 0))
      throw PortError("input", b_name,
                      lv + " has " + std::to_string(b[j][0]) + " channels, " + a_what + " has " + std::to_string(a[j][0]));
    if (spatial && (differ(j, 1) || differ(j, 2)))
      throw PortError("input", b_name, lv + " is " + hw(b[j]) + " (HxW), " + a_what + " is " + hw(a[j]));
  }
}

void check_pyramid_shapes(const Shape& ref, const char* ref_name, const Shape& other, const char* other_name) {
  if (!ref.known || !other.known) return;
  check_levels_match(ref.levels, quoted(ref_name), other.levels, other_name, true);
}

void check_pyramid(const std::vector<at::Tensor>& ref, const char* ref_name, const std::vector<at::Tensor>& other,
                   const char* other_name) {
  check_level_count(ref.size(), quoted(ref_name), other.size(), other_name);
  if (ref.empty()) throw PortError("input", ref_name, "has no levels");
  check_ranks_and_batch(ref, ref_name, other, other_name);
  check_levels_match(level_dims(ref), quoted(ref_name), level_dims(other), other_name, true);
  for (size_t j = 0; j < ref.size(); ++j)
    if (other[j].device() != ref[j].device())
      throw PortError("input", other_name,
                      "level " + std::to_string(j) + " is on " + other[j].device().str() + ", " + quoted(ref_name) + " on " +
                          ref[j].device().str());
}

}  // namespace fmam
