// Smooths an anomaly map with a separable Gaussian (Halide kernel "gaussian_blur"), the last step
// of S_L in Eq. 8 (sigma = 4, METHOD.md). Convention: scipy.ndimage.gaussian_filter as RD4AD's code
// calls it: truncate 4, radius = int(4 * sigma + 0.5) (16 for sigma 4: 33 taps), normalised
// weights, mode 'reflect' = half-sample symmetric borders (d c b a | a b c d), repeated for maps
// smaller than the radius. anomalib's GaussianBlur2d has the same width, 2 * int(4 sigma + 0.5)
// + 1, but pads with torch's whole-sample 'reflect' (c b | a b c): other values at the border.
// 256x256, sigma 4: 0.19 ms per map, 1 thread (AMD EPYC Zen 4, 2026-11); details beside the
// schedule in halide_generators/gaussian_blur_generator.cpp.
#pragma once

#include "framework/node.h"
#include "framework/types.h"

namespace fmam {

class GaussianBlurNode final : public Node {
 public:
  struct Params {
    float sigma = 4.0f;
  };
  static constexpr In<Map2D> kIn{"map"};
  static constexpr Out<Map2D> kOut{"map"};
  static Contract contract() {
    return Contract("GaussianBlur")
        .doc("Gaussian smoothing of an anomaly map (scipy gaussian_filter, truncate 4, reflect)")
        .in(kIn, "anomaly map, HxW float32")
        .out(kOut, "smoothed map, same size")
        .param(&Params::sigma, "sigma", "std-dev in pixels; radius int(4 sigma + 0.5)", Range{0.5f, 32.f})
        .concurrency(Concurrency::kUnlimited);  // pure function of its input
  }
  static Shapes infer(const Params&, const Shapes& in);
  explicit GaussianBlurNode(const Params& p) : params_(p) {}
  void process(Context& ctx) override;

  // The work itself, for callers outside a graph: CUDA kernel when `device` asks for it and one
  // is usable, else CPU.
  static cv::Mat blur(const cv::Mat& map, float sigma, Device device = Device::kCpu);

 private:
  Params params_;
};

}  // namespace fmam
