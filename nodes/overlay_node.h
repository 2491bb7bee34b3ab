// Draws an anomaly map over the input image at the image's ORIGINAL resolution (the map is
// resized up bilinearly, not the image down), with the score written on it. Colours are scaled by
// the FIXED range [lo, hi] (set by hand, or calibrated and stored in the model by `fmam eval
// --calibrate`), never per image: a per-image min-max would paint every normal image red.
#pragma once

#include "framework/node.h"
#include "framework/types.h"

namespace fmam {

class OverlayNode final : public Node {
 public:
  struct Params {
    float lo = 0.0f;
    float hi = 1.0f;
    float alpha = 0.6f;
    float threshold = -1.0f;
    bool show_score = true;
  };
  static constexpr In<Image> kImage{"image"};
  static constexpr In<Map2D> kMap{"map"};
  static constexpr In<Scalar> kScore{"score"};
  static constexpr Out<Image> kOut{"image"};
  static Contract contract() {
    return Contract("Overlay")
        .doc("heatmap of an anomaly map over the original image, with the score (and pass/fail)")
        .in(kImage, "the original image, any size")
        .in(kMap, "anomaly map (any size; resized to the image)")
        .in(kScore, "image score, written on the overlay", /*optional=*/true)
        .out(kOut, "BGR overlay at the image's resolution")
        .param(&Params::lo, "lo", "map value drawn coldest (fixed, or from the model's calibration)")
        .from_model("map_lo")
        .param(&Params::hi, "hi", "map value drawn hottest")
        .from_model("map_hi")
        .param(&Params::alpha, "alpha", "heatmap opacity at hi (it fades to 0 at lo)", Range{0.0f, 1.0f})
        .param(&Params::threshold, "threshold", "score at or above which the image FAILs; negative: no verdict")
        .from_model("threshold")
        .param(&Params::show_score, "show_score", "write the score (and verdict) in the corner")
        .concurrency(Concurrency::kUnlimited);
  }
  static Shapes infer(const Params&, const Shapes& in) { return {{kOut, in.at(kImage)}}; }
  explicit OverlayNode(const Params& p);
  void process(Context& ctx) override;

 private:
  Params params_;
};

}  // namespace fmam
