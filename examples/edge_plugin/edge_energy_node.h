// A third-party node, built outside fmam's own nodes/ into its own plugin: the gradient energy
// of an image (Sobel magnitude, normalised to [0, 1] by the largest possible magnitude). Fed to
// fmam's GaussianBlur and TopKScore it makes a cheap scratch/edge detector with no training.
#pragma once

#include "framework/node.h"
#include "framework/types.h"

namespace example {

class EdgeEnergyNode final : public fmam::Node {
 public:
  struct Params {
    int ksize = 3;
    int max_side = 512;
  };
  static constexpr fmam::In<fmam::Image> kIn{"image"};
  static constexpr fmam::Out<fmam::Map2D> kOut{"map"};
  static fmam::Contract contract() {
    return fmam::Contract("EdgeEnergy")
        .doc("example plugin: Sobel gradient magnitude of an image, in [0, 1]")
        .in(kIn, "image, 8-bit BGR or gray")
        .out(kOut, "gradient magnitude, HxW float32 (downscaled so the long side <= max_side)")
        .param(&Params::ksize, "ksize", "Sobel aperture", fmam::Choices<int>{{"3", 3}, {"5", 5}})
        .param(&Params::max_side, "max_side", "downscale first so the long side is at most this", fmam::Range{16, 8192})
        .concurrency(fmam::Concurrency::kUnlimited);
  }
  explicit EdgeEnergyNode(const Params& p) : params_(p) {}
  void process(fmam::Context& ctx) override;

 private:
  Params params_;
};

}  // namespace example
