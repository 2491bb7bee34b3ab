// Pillow's bilinear resize against images Pillow itself made (tests/testdata/pil_resize/, by
// make_pil_resize_fixture.py): equal to the last bit, down, up, mixed, 2x and one axis only.
#include <gtest/gtest.h>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "framework/node_runner.h"
#include "nodes/pil_resize.h"
#include "nodes/resize_node.h"

namespace fmam {
namespace {

const std::string kDir = std::string(FMAM_SOURCE_DIR) + "/tests/testdata/pil_resize/";

cv::Mat read(const std::string& name, int flags = cv::IMREAD_COLOR) {
  cv::Mat m = cv::imread(kDir + name, flags);
  EXPECT_FALSE(m.empty()) << kDir + name;
  return m;
}

int max_abs_diff(const cv::Mat& a, const cv::Mat& b) {
  if (a.size() != b.size() || a.type() != b.type()) return 1 << 30;
  double mx = 0;
  cv::minMaxLoc(cv::abs(a - b) + cv::abs(b - a), nullptr, &mx);
  return int(mx);
}

TEST(PilResizeTest, EqualsPillowBitForBit) {
  const cv::Mat in = read("input.png");
  for (cv::Size s : {cv::Size(16, 24), cv::Size(80, 41), cv::Size(26, 18), cv::Size(53, 20), cv::Size(29, 37), cv::Size(7, 5)}) {
    const std::string name = std::to_string(s.width) + "x" + std::to_string(s.height) + ".png";
    EXPECT_EQ(max_abs_diff(resize_like_pil_bilinear(in, s), read(name)), 0) << name;
  }
}

TEST(PilResizeTest, GrayEqualsPillow) {
  const cv::Mat in = read("input_gray.png", cv::IMREAD_GRAYSCALE);
  EXPECT_EQ(max_abs_diff(resize_like_pil_bilinear(in, {16, 24}), read("gray_16x24.png", cv::IMREAD_GRAYSCALE)), 0);
}

TEST(PilResizeTest, DiffersFromOpenCvsFilters) {
  // The point of having it: no OpenCV filter is Pillow's antialiased bilinear.
  const cv::Mat in = read("input.png"), want = read("16x24.png");
  for (int interp : {cv::INTER_AREA, cv::INTER_LINEAR}) {
    cv::Mat cv_out;
    cv::resize(in, cv_out, {16, 24}, 0, 0, interp);
    EXPECT_GT(max_abs_diff(cv_out, want), 2) << interp;
  }
}

TEST(PilResizeTest, ResizeNodeUsesItByDefault) {
  for (const std::string interp : {"", R"(, "interpolation": "pil_bilinear")"}) {
    NodeRunner runner(R"({"id": "resize", "type": "Resize",
                          "params": {"width": 16, "height": 24, "normalize": "unit")" +
                      interp + "}}");
    runner.push(ResizeNode::kIn, Image{read("input.png")});
    runner.run();
    at::Tensor t = runner.pop(ResizeNode::kOut).t;
    const cv::Mat want = read("16x24.png");  // BGR; the tensor is RGB
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 24; ++y)
        for (int x = 0; x < 16; ++x)
          ASSERT_FLOAT_EQ(t[0][c][y][x].item<float>(), want.at<cv::Vec3b>(y, x)[2 - c] / 255.0f) << c << "," << y << "," << x;
  }
}

}  // namespace
}  // namespace fmam
