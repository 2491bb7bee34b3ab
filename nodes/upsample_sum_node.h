// Builds S_L of Eq. 8: bilinearly upsamples each level's discrepancy map D^j to width x height and
// combines them, summing (mode "add", the paper and RD4AD) or multiplying (mode "multiply",
// anomalib's AnomalyMapGenerationMode). Bilinear as torch F.interpolate(mode="bilinear");
// align_corners defaults to true, as RD4AD's cal_anomaly_map and anomalib do. Optional per-level
// weights scale each level first (default: none, Eq. 8). Halide kernel
// "upsample_add", one call per level.
// Levels 64/32/16 -> 256x256: 0.06 ms per frame, 1 thread (AMD EPYC Zen 4, 2026-11); details
// beside the schedule in halide_generators/upsample_add_generator.cpp.
#pragma once

#include <vector>

#include "framework/node.h"
#include "framework/tensor_types.h"
#include "framework/types.h"

namespace fmam {

class UpsampleSumNode final : public Node {
 public:
  enum class Mode { kAdd, kMultiply };
  struct Params {
    int width = 256;
    int height = 256;
    bool align_corners = true;
    Mode mode = Mode::kAdd;
    std::vector<float> weights;  // per level; empty: 1 each (Eq. 8)
  };
  static constexpr In<FeaturePyramid> kIn{"maps"};
  static constexpr Out<Map2D> kOut{"map"};
  static Contract contract() {
    return Contract("UpsampleSum")
        .doc("upsample per-level anomaly maps to one size and add (or multiply) them (Eq. 8)")
        .in(kIn, "per-level 1-channel maps, each [1, 1, h_j, w_j] float32")
        .out(kOut, "anomaly map, height x width float32")
        .param(&Params::width, "width", "output width in pixels", Range{1, 8192})
        .from_model("image_width")
        .param(&Params::height, "height", "output height in pixels", Range{1, 8192})
        .from_model("image_height")
        .param(&Params::align_corners, "align_corners",
               "bilinear sampling grid as torch F.interpolate; true: RD4AD and anomalib's RD "
               "(anomalib's STFPM uses false)")
        .param(&Params::mode, "mode", "how levels combine: add (Eq. 8) or multiply (anomalib)",
               Choices<Mode>{{"add", Mode::kAdd}, {"multiply", Mode::kMultiply}})
        .param(&Params::weights, "weights",
               "one factor per level, shallow to deep, each level's map is multiplied by before "
               "they combine (S_L = sum_j w_j Phi(D^j)); [] (default): 1 each, the paper's Eq. 8. "
               "Mapped features change each level's scale, and the sum weighs levels by it")
        .concurrency(Concurrency::kUnlimited);  // pure function of its input
  }
  static Shapes infer(const Params& p, const Shapes& in);
  explicit UpsampleSumNode(const Params& p);
  void process(Context& ctx) override;

  // The work itself, for callers outside a graph.
  static cv::Mat upsample_sum(const std::vector<at::Tensor>& levels, const Params& p, Device device = Device::kCpu);

 private:
  Params params_;
};

}  // namespace fmam
