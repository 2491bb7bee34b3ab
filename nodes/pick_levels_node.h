// Keeps some levels of a pyramid, in the order param "levels" lists them. With ConcatLevels it
// builds a map of any mix of discrepancies, e.g. RKD+FMAM's map with one level taken from the raw
// features and the others from the mapped ones (graphs/ablations/fmam_rkd_per_level.json), which
// says which level's mapping gains or costs a category.
#pragma once

#include <vector>

#include "framework/node.h"
#include "framework/tensor_types.h"

namespace fmam {

class PickLevelsNode final : public Node {
 public:
  struct Params {
    std::vector<int> levels = {0};
  };
  static constexpr In<FeaturePyramid> kIn{"levels"};
  static constexpr Out<FeaturePyramid> kOut{"levels"};
  static Contract contract() {
    return Contract("PickLevels")
        .doc("the listed levels of a pyramid, in that order (tensors shared, not copied)")
        .in(kIn, "a pyramid (features, or CosineDiscrepancy's per-level maps)")
        .out(kOut, "the levels param \"levels\" names")
        .param(&Params::levels, "levels",
               "indices of the levels to keep, 0 = shallowest (layer1), each at most once; [] keeps none "
               "(ConcatLevels then adds nothing from this side)")
        .concurrency(Concurrency::kUnlimited)  // a pure function of its input
        .batchable();
  }
  static Shapes infer(const Params& p, const Shapes& in);
  explicit PickLevelsNode(const Params& p);
  void process(Context& ctx) override;

  // The work itself: throws PortError when an index is past the pyramid's last level.
  static std::vector<at::Tensor> pick(const std::vector<at::Tensor>& levels, const std::vector<int>& which);

 private:
  std::vector<int> levels_;
};

}  // namespace fmam
