// Joins two pyramids into one: the levels of "a", then those of "b". With two CosineDiscrepancy
// nodes upstream and UpsampleSum downstream, it makes one anomaly map of several discrepancies,
// e.g. the raw features' beside the mapped features' (graphs/ablations/fmam_rkd_raw_plus_mapped.json):
// UpsampleSum adds every level it is given, so the map is the sum of both maps, S_L(a) + S_L(b).
#pragma once

#include <vector>

#include "framework/node.h"
#include "framework/tensor_types.h"

namespace fmam {

class ConcatLevelsNode final : public Node {
 public:
  struct Params {};
  static constexpr In<FeaturePyramid> kInA{"a"};
  static constexpr In<FeaturePyramid> kInB{"b"};
  static constexpr Out<FeaturePyramid> kOut{"levels"};
  static Contract contract() {
    return Contract("ConcatLevels")
        .doc("one pyramid of two: a's levels, then b's (tensors shared, not copied)")
        .in(kInA, "a pyramid")
        .in(kInB, "another pyramid of the same batch size")
        .out(kOut, "a's levels followed by b's")
        .concurrency(Concurrency::kUnlimited)  // a pure function of its inputs
        .batchable();
  }
  static Shapes infer(const Params& p, const Shapes& in);
  explicit ConcatLevelsNode(const Params&) {}
  void process(Context& ctx) override;

  // The work itself: throws PortError when a level is undefined or the batch sizes differ.
  static std::vector<at::Tensor> concat(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b);
};

}  // namespace fmam
