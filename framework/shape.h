// Shapes for load-time inference (OpenCV G-API's outMeta): what a stream will carry per frame,
// known before any pixel flows, so a teacher/student mismatch is a load error.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "framework/error.h"

namespace fmam {

// Per-frame dims, batch excluded; -1 = not known before run time.
//   Image [H, W, C]   Map2D/Mask [H, W]   Tensor [C, H, W]   Scalar []
//   FeaturePyramid: levels, each [C, H, W].
struct Shape {
  std::vector<int64_t> dims;
  std::vector<std::vector<int64_t>> levels;
  bool known = true;  // false: the producer did not say (no infer())

  static Shape unknown() {
    Shape s;
    s.known = false;
    return s;
  }
  static Shape of(std::vector<int64_t> d) {
    Shape s;
    s.dims = std::move(d);
    return s;
  }
  static Shape pyramid(std::vector<std::vector<int64_t>> l) {
    Shape s;
    s.levels = std::move(l);
    return s;
  }
  std::string str() const;
};

// Shapes keyed by port name; at() names the missing port when asked for one that is not there.
class Shapes {
 public:
  Shapes() = default;
  Shapes(std::initializer_list<std::pair<const std::string, Shape>> init) : m_(init) {}
  bool has(std::string_view port) const { return m_.count(std::string(port)) > 0; }
  const Shape& at(std::string_view port) const {
    auto it = m_.find(std::string(port));
    if (it == m_.end()) throw Error("no shape for port \"" + std::string(port) + "\"");
    return it->second;
  }
  void set(std::string_view port, Shape s) { m_[std::string(port)] = std::move(s); }
  const std::map<std::string, Shape>& all() const { return m_; }

 private:
  std::map<std::string, Shape> m_;
};

}  // namespace fmam
