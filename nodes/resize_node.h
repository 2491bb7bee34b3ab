// Resizes an image to the network's input size and normalises it into a [1, 3, H, W] float
// tensor with cv::dnn::blobFromImage (BGR -> RGB, scale 1/255), then ImageNet mean/std per
// channel. The default interpolation, "pil_bilinear", is Pillow's antialiased bilinear, bit for
// bit: what torchvision's transforms.Resize does to PIL images in RD4AD's and anomalib's
// pipelines and in the teacher's ImageNet training (nodes/pil_resize.h). docs/RESULTS.md
// measures what it is worth against OpenCV's "area".
#pragma once

#include "framework/node.h"
#include "framework/tensor_types.h"
#include "framework/types.h"

namespace fmam {

class ResizeNode final : public Node {
 public:
  enum class Norm { kImageNet, kUnit };
  static constexpr int kPilBilinear = 100;  // not an OpenCV flag: nodes/pil_resize.h
  struct Params {
    int width = 256;
    int height = 256;
    int interpolation = kPilBilinear;
    Norm normalize = Norm::kImageNet;
  };
  static constexpr In<Image> kIn{"image"};
  static constexpr Out<Tensor> kOut{"tensor"};
  static Contract contract() {
    return Contract("Resize")
        .doc("resize + normalise an image into the network's input tensor")
        .in(kIn, "image, 8-bit BGR or gray, any size")
        .out(kOut, "float32 [1, 3, height, width], RGB, normalised")
        .param(&Params::width, "width", "output width in pixels", Range{8, 4096})
        .from_model("image_width")
        .param(&Params::height, "height", "output height in pixels", Range{8, 4096})
        .from_model("image_height")
        .param(&Params::interpolation, "interpolation", "resampling filter",
               Choices<int>{{"area", 3}, {"linear", 1}, {"cubic", 2}, {"nearest", 0}, {"pil_bilinear", kPilBilinear}})
        .param(&Params::normalize, "normalize", "imagenet: (x/255 - mean) / std with torchvision's ImageNet values; unit: x/255",
               Choices<Norm>{{"imagenet", Norm::kImageNet}, {"unit", Norm::kUnit}})
        .concurrency(Concurrency::kUnlimited)
        .deterministic();
  }
  static Shapes infer(const Params& p, const Shapes& in);
  explicit ResizeNode(const Params& p) : params_(p) {}
  void process(Context& ctx) override;

  // The work itself, for callers outside a graph (training data loading, tests).
  static at::Tensor to_tensor(const cv::Mat& image, const Params& p);

 private:
  Params params_;
};

}  // namespace fmam
