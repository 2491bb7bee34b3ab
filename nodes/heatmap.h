// The heatmap colouring every picture of an anomaly map uses (MapWriter's PNG, Overlay's blend):
// one function, so a value has the same colour in every output. JET over the FIXED range
// [lo, hi], never per image, so that equal values look equal across images; values outside the
// range take the end colours.
#pragma once

#include <opencv2/core.hpp>

namespace fmam {

// map: HxW float32; lo < hi. Returns HxW 8-bit BGR: v -> JET(saturate(255 * (v - lo) / (hi - lo))).
cv::Mat heatmap_bgr(const cv::Mat& map, float lo, float hi);

}  // namespace fmam
