#include "nodes/concat_levels_node.h"

#include <ATen/core/Tensor.h>

#include <string>

namespace fmam {

Shapes ConcatLevelsNode::infer(const Params&, const Shapes& in) {
  const Shape& a = in.at(kInA);
  const Shape& b = in.at(kInB);
  if (!a.known || !b.known) return {{kOut, Shape::unknown()}};
  std::vector<std::vector<int64_t>> levels = a.levels;
  levels.insert(levels.end(), b.levels.begin(), b.levels.end());
  return {{kOut, Shape::pyramid(levels)}};
}

namespace {

// The batch size of a pyramid's levels, checked to agree level by level (-1 for no levels).
int64_t batch_of(const std::vector<at::Tensor>& levels, const char* port) {
  int64_t batch = -1;
  for (size_t j = 0; j < levels.size(); ++j) {
    const at::Tensor& t = levels[j];
    if (!t.defined() || t.dim() == 0)
      throw PortError("input", port, "level " + std::to_string(j) + " is empty; each level must be a [B, ...] tensor");
    if (batch >= 0 && t.size(0) != batch)
      throw PortError(
          "input", port,
          "level " + std::to_string(j) + " has batch " + std::to_string(t.size(0)) + ", level 0 has " + std::to_string(batch));
    batch = t.size(0);
  }
  return batch;
}

}  // namespace

std::vector<at::Tensor> ConcatLevelsNode::concat(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  const int64_t batch_a = batch_of(a, kInA.name);
  const int64_t batch_b = batch_of(b, kInB.name);
  if (batch_a >= 0 && batch_b >= 0 && batch_a != batch_b)
    throw PortError("input", kInB.name,
                    "has batch " + std::to_string(batch_b) + " but input \"a\" has " + std::to_string(batch_a) +
                        "; both pyramids must describe the same images");
  std::vector<at::Tensor> levels = a;
  levels.insert(levels.end(), b.begin(), b.end());
  return levels;
}

void ConcatLevelsNode::process(Context& ctx) {
  kOut(ctx).send(FeaturePyramid{concat(kInA(ctx).get().levels, kInB(ctx).get().levels)});
}

FMAM_REGISTER_NODE(ConcatLevelsNode);

}  // namespace fmam
