#include "nodes/pick_levels_node.h"

#include <ATen/core/Tensor.h>

#include <algorithm>
#include <string>

namespace fmam {

namespace {

// Checked where the graph is read, so a bad list fails before the first frame.
void check_levels_param(const std::vector<int>& levels) {
  for (size_t i = 0; i < levels.size(); ++i) {
    FMAM_CHECK(levels[i] >= 0) << "param \"levels\": indices count from 0, got " << levels[i];
    FMAM_CHECK(std::count(levels.begin(), levels.begin() + i, levels[i]) == 0)
        << "param \"levels\": level " << levels[i] << " is listed twice";
  }
}

std::string out_of_range(int index, size_t count) {
  const std::string has = count == 0 ? "no levels" : std::to_string(count) + " (0.." + std::to_string(count - 1) + ")";
  return "param \"levels\" names level " + std::to_string(index) + " but the pyramid has " + has;
}

}  // namespace

Shapes PickLevelsNode::infer(const Params& p, const Shapes& in) {
  check_levels_param(p.levels);
  const Shape& s = in.at(kIn);
  if (!s.known) return {{kOut, Shape::unknown()}};
  std::vector<std::vector<int64_t>> levels;
  for (int j : p.levels) {
    if (size_t(j) >= s.levels.size()) throw PortError("input", kIn.name, out_of_range(j, s.levels.size()));
    levels.push_back(s.levels[size_t(j)]);
  }
  return {{kOut, Shape::pyramid(levels)}};
}

PickLevelsNode::PickLevelsNode(const Params& p) : levels_(p.levels) { check_levels_param(levels_); }

std::vector<at::Tensor> PickLevelsNode::pick(const std::vector<at::Tensor>& levels, const std::vector<int>& which) {
  std::vector<at::Tensor> out;
  out.reserve(which.size());
  for (int j : which) {
    if (j < 0 || size_t(j) >= levels.size()) throw PortError("input", kIn.name, out_of_range(j, levels.size()));
    out.push_back(levels[size_t(j)]);
  }
  return out;
}

void PickLevelsNode::process(Context& ctx) { kOut(ctx).send(FeaturePyramid{pick(kIn(ctx).get().levels, levels_)}); }

FMAM_REGISTER_NODE(PickLevelsNode);

}  // namespace fmam
