#include "nodes/resize_node.h"

#include "nodes/pil_resize.h"

#include <ATen/ops/empty.h>

#include <cstring>

#include <opencv2/dnn.hpp>
#include <opencv2/imgproc.hpp>

namespace fmam {

namespace {
// torchvision's ImageNet statistics, RGB order.
constexpr float kMean[3] = {0.485f, 0.456f, 0.406f};
constexpr float kStd[3] = {0.229f, 0.224f, 0.225f};
}  // namespace

Shapes ResizeNode::infer(const Params& p, const Shapes& in) {
  const Shape& s = in.at(kIn);
  if (s.known && s.dims.size() == 3 && s.dims[2] != -1 && s.dims[2] != 1 && s.dims[2] != 3)
    throw PortError("input", kIn.name, "needs 1 or 3 channels, got " + std::to_string(s.dims[2]));
  return {{kOut, Shape::of({3, p.height, p.width})}};
}

at::Tensor ResizeNode::to_tensor(const cv::Mat& image, const Params& p) {
  FMAM_CHECK(!image.empty()) << "input \"image\" is empty";
  FMAM_CHECK(image.depth() == CV_8U) << "input \"image\": expected 8-bit pixels, got OpenCV depth " << image.depth();
  cv::Mat bgr = image;
  if (image.channels() == 1)
    cv::cvtColor(image, bgr, cv::COLOR_GRAY2BGR);
  else if (image.channels() == 4)
    cv::cvtColor(image, bgr, cv::COLOR_BGRA2BGR);
  FMAM_CHECK(bgr.channels() == 3) << "input \"image\": expected 1, 3 or 4 channels, got " << image.channels();
  cv::Mat resized;
  if (p.interpolation == kPilBilinear)
    resized = resize_like_pil_bilinear(bgr, cv::Size(p.width, p.height));
  else
    cv::resize(bgr, resized, cv::Size(p.width, p.height), 0, 0, p.interpolation);
  // NCHW float, RGB, x/255.
  cv::Mat blob = cv::dnn::blobFromImage(resized, 1.0 / 255.0, cv::Size(), cv::Scalar(), /*swapRB=*/true,
                                        /*crop=*/false, CV_32F);
  at::Tensor t = at::empty({1, 3, p.height, p.width}, at::kFloat);
  const size_t plane = size_t(p.height) * p.width;
  const float* src = blob.ptr<float>();
  float* dst = t.data_ptr<float>();
  if (p.normalize == Norm::kImageNet) {
    for (int c = 0; c < 3; ++c) {
      const float m = kMean[c], inv = 1.0f / kStd[c];
      for (size_t i = 0; i < plane; ++i) dst[c * plane + i] = (src[c * plane + i] - m) * inv;
    }
  } else {
    std::memcpy(dst, src, 3 * plane * sizeof(float));
  }
  return t;
}

void ResizeNode::process(Context& ctx) { kOut(ctx).send(Tensor{to_tensor(kIn(ctx).get().mat, params_)}); }

FMAM_REGISTER_NODE(ResizeNode);

}  // namespace fmam
