// nodes/heatmap.h: the one heatmap colouring, and both nodes that draw with it (MapWriter's PNG,
// Overlay's blend), checked bit for bit against the code they each ran before they shared it.
#include "nodes/heatmap.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "framework/node_runner.h"
#include "nodes/map_writer_node.h"
#include "nodes/overlay_node.h"
#include "tests/support/helpers.h"

namespace fmam {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

// MapWriterNode::colorize as it was before #17 (the Overlay node called it too).
cv::Mat reference_colorize(const cv::Mat& map, float lo, float hi) {
  cv::Mat u8;
  map.convertTo(u8, CV_8U, 255.0 / (hi - lo), -lo * 255.0 / (hi - lo));
  cv::Mat color;
  cv::applyColorMap(u8, color, cv::COLORMAP_JET);
  return color;
}

// A ramp from below lo to above hi, so the clamp at both ends is covered, and values that
// round either way at 8 bits.
cv::Mat ramp(int h, int w, float from, float to) {
  cv::Mat m(h, w, CV_32F);
  for (int i = 0; i < h * w; ++i) m.at<float>(i) = from + (to - from) * float(i) / float(h * w - 1);
  return m;
}

bool same_bits(const cv::Mat& a, const cv::Mat& b) {
  return a.size() == b.size() && a.type() == b.type() && cv::norm(a, b, cv::NORM_INF) == 0;
}

TEST(HeatmapTest, MatchesThePreviousColouringBitForBit) {
  for (const auto& [lo, hi] : {std::pair(0.0f, 1.0f), std::pair(0.2f, 0.7f), std::pair(-3.0f, 5.0f)}) {
    const cv::Mat m = ramp(37, 53, lo - 0.5f * (hi - lo), hi + 0.5f * (hi - lo));
    const cv::Mat got = heatmap_bgr(m, lo, hi);
    EXPECT_EQ(got.type(), CV_8UC3);
    EXPECT_TRUE(same_bits(got, reference_colorize(m, lo, hi))) << "lo " << lo << ", hi " << hi;
  }
}

// JET's ends, and the clamp: at or below lo the coldest colour, at or above hi the hottest.
TEST(HeatmapTest, EndsAreJetsEndsAndOutOfRangeValuesClamp) {
  cv::Mat m = (cv::Mat_<float>(1, 4) << -10.0f, 0.25f, 0.75f, 10.0f);
  const cv::Mat c = heatmap_bgr(m, 0.25f, 0.75f);
  EXPECT_EQ(c.at<cv::Vec3b>(0, 0), c.at<cv::Vec3b>(0, 1));
  EXPECT_EQ(c.at<cv::Vec3b>(0, 2), c.at<cv::Vec3b>(0, 3));
  EXPECT_EQ(c.at<cv::Vec3b>(0, 1), cv::Vec3b(128, 0, 0));  // BGR: dark blue
  EXPECT_EQ(c.at<cv::Vec3b>(0, 2), cv::Vec3b(0, 0, 128));  // BGR: dark red
}

TEST(HeatmapTest, MapWriterPngIsTheHeatmap) {
  TempDir dir;
  NodeRunner runner(R"({"id": "w", "type": "MapWriter", "params": {"dir": ")" + dir.path.string() +
                    R"(", "lo": 0.2, "hi": 0.7, "raw": false}})");
  const cv::Mat m = ramp(24, 40, -0.1f, 1.0f);
  runner.push(MapWriterNode::kIn, Map2D{m});
  runner.run();
  std::vector<fs::path> pngs;
  for (const auto& e : fs::directory_iterator(dir.path))
    if (e.path().extension() == ".png") pngs.push_back(e.path());
  ASSERT_EQ(pngs.size(), 1u);
  EXPECT_TRUE(same_bits(cv::imread(pngs[0].string(), cv::IMREAD_COLOR), heatmap_bgr(m, 0.2f, 0.7f)));
}

// Overlay blends the heatmap over the image with opacity alpha * clamp((v - lo) / (hi - lo)).
// On a black image each pixel is that fraction of the heatmap's colour, so every colour counts.
TEST(OverlayHeatmapTest, BlendsTheSameHeatmapAsMapWriter) {
  const float lo = 0.2f, hi = 0.7f, alpha = 1.0f, scale = 1.0f / (hi - lo);  // as the node does
  const cv::Mat m = ramp(24, 40, 0.0f, 1.0f);
  NodeRunner runner(R"({"id": "o", "type": "Overlay",
                        "params": {"lo": 0.2, "hi": 0.7, "alpha": 1.0, "show_score": false}})");
  runner.push(OverlayNode::kImage, Image{cv::Mat::zeros(m.size(), CV_8UC3)});
  runner.push(OverlayNode::kMap, Map2D{m});
  runner.run();
  const cv::Mat got = runner.pop(OverlayNode::kOut).mat;
  const cv::Mat hot = reference_colorize(m, lo, hi);
  cv::Mat want(m.size(), CV_8UC3);
  for (int y = 0; y < m.rows; ++y)
    for (int x = 0; x < m.cols; ++x) {
      const float a = alpha * std::min(1.0f, std::max(0.0f, (m.at<float>(y, x) - lo) * scale));
      for (int c = 0; c < 3; ++c) want.at<cv::Vec3b>(y, x)[c] = cv::saturate_cast<uchar>(a * hot.at<cv::Vec3b>(y, x)[c]);
    }
  EXPECT_TRUE(same_bits(got, want));
}

}  // namespace
}  // namespace fmam
