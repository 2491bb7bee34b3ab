// Resize against an independent reference: OpenCV resize + per-pixel loops for the
// normalisation (not blobFromImage), and the param errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <opencv2/imgproc.hpp>

#include "framework/graph.h"
#include "framework/node_runner.h"
#include "nodes/resize_node.h"

namespace fmam {
namespace {

cv::Mat test_image(int h, int w) {
  cv::Mat m(h, w, CV_8UC3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) m.at<cv::Vec3b>(y, x) = cv::Vec3b(uchar(x * 7 + y), uchar(y * 3), uchar((x ^ y) & 255));
  return m;
}

TEST(ResizeNodeTest, MatchesLoopReferenceImageNet) {
  NodeRunner runner(R"({"id": "resize", "type": "Resize", "params": {"width": 32, "height": 24, "interpolation": "area"}})");
  cv::Mat img = test_image(50, 70);
  runner.push(ResizeNode::kIn, Image{img});
  runner.run();
  at::Tensor t = runner.pop(ResizeNode::kOut).t;
  ASSERT_EQ(t.sizes(), (at::IntArrayRef{1, 3, 24, 32}));
  cv::Mat small;
  cv::resize(img, small, cv::Size(32, 24), 0, 0, cv::INTER_AREA);
  const float mean[3] = {0.485f, 0.456f, 0.406f}, std_[3] = {0.229f, 0.224f, 0.225f};
  const float* d = t.data_ptr<float>();
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 24; ++y)
      for (int x = 0; x < 32; ++x) {
        float v = small.at<cv::Vec3b>(y, x)[2 - c] / 255.0f;  // RGB from BGR
        ASSERT_NEAR(d[(c * 24 + y) * 32 + x], (v - mean[c]) / std_[c], 1e-5) << c << "," << y << "," << x;
      }
}

TEST(ResizeNodeTest, GrayInputBecomesThreeEqualChannels) {
  NodeRunner runner(R"({"id": "resize", "type": "Resize", "params": {"width": 8, "height": 8, "normalize": "unit"}})");
  cv::Mat gray(16, 16, CV_8UC1, cv::Scalar(51));
  runner.push(ResizeNode::kIn, Image{gray});
  runner.run();
  at::Tensor t = runner.pop(ResizeNode::kOut).t;
  EXPECT_NEAR(t.min().item<float>(), 0.2f, 1e-6);
  EXPECT_NEAR(t.max().item<float>(), 0.2f, 1e-6);
}

TEST(ResizeNodeTest, BadParamsAreNamed) {
  EXPECT_THAT([] { NodeRunner r(R"({"id": "resize", "type": "Resize", "params": {"width": 0}})"); },
              testing::ThrowsMessage<GraphError>(
                  testing::HasSubstr(R"(NodeRunner: node "resize" (Resize): param "width": must be in [8, 4096], got 0)")));
  EXPECT_THAT([] { NodeRunner r(R"({"id": "resize", "type": "Resize", "params": {"interpolation": "bicubic"}})"); },
              testing::ThrowsMessage<GraphError>(testing::HasSubstr("one of: area, linear, cubic, nearest, pil_bilinear")));
}

}  // namespace
}  // namespace fmam
