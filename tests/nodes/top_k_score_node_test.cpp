// TopKScore against the sort reference (tests/reference/top_k.h) and std::nth_element: exact
// top-k multiset means with ties, k beyond the pixel count, signs, zeros, infinities, edge sizes,
// NaN and param errors, CPU/CUDA parity.
#include "nodes/top_k_score_node.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <opencv2/core.hpp>

#include "framework/graph.h"
#include "framework/node_runner.h"
#include "nodes/halide_support.h"
#include "tests/reference/top_k.h"
#include "tests/support/helpers.h"

namespace fmam {
namespace {

using testing::HasSubstr;

using test::RandomMap;

double Score(const cv::Mat& map, const std::string& params = "{}", Device device = Device::kCpu) {
  RunOptions o;
  o.device = device;
  NodeRunner runner(R"({"id": "score", "type": "TopKScore", "params": )" + params + "}", o);
  runner.push(TopKScoreNode::kIn, Map2D{map});
  runner.run();
  return runner.pop(TopKScoreNode::kOut).value;
}

double ScoreK(const cv::Mat& map, int k) { return Score(map, "{\"k\": " + std::to_string(k) + "}"); }

// Sums of the same floats in another order differ in the last bits of a double only.
void ExpectSame(double got, double want) { EXPECT_NEAR(got, want, 1e-12 * std::max(1.0, std::fabs(want))); }

TEST(TopKScoreNodeTest, RandomMapMatchesSortReference) {
  cv::Mat m = RandomMap(256, 256, 1);
  for (int k : {1, 2, 100, 999, 65535, 65536}) ExpectSame(ScoreK(m, k), reference::TopKMean(m, k));
}

// Convention: k = 100 (the paper's S_C) unless the graph says otherwise.
TEST(TopKScoreNodeTest, KDefaultIsOneHundred) {
  cv::Mat m = RandomMap(64, 48, 2, -3.0f, 5.0f);
  ExpectSame(Score(m), reference::TopKMean(m, 100));
}

TEST(TopKScoreNodeTest, AgreesWithNthElement) {
  cv::Mat m = RandomMap(100, 37, 3, -1e3f, 1e3f);
  std::vector<float> v(m.begin<float>(), m.end<float>());
  const int k = 250;
  std::nth_element(v.begin(), v.begin() + (k - 1), v.end(), std::greater<float>());
  const double want = std::accumulate(v.begin(), v.begin() + k, 0.0) / k;
  ExpectSame(ScoreK(m, k), want);
}

// Ties: the top-k multiset takes the k-th value as many times as needed, not once per value.
TEST(TopKScoreNodeTest, TiesAtTheKthValueCountAsAMultiset) {
  cv::Mat m(3, 4, CV_32FC1, cv::Scalar(1.0f));
  m.at<float>(0, 0) = m.at<float>(1, 2) = m.at<float>(2, 3) = m.at<float>(2, 0) = 5.0f;  // four 5s
  m.at<float>(0, 1) = m.at<float>(0, 2) = 3.0f;                                          // two 3s
  EXPECT_DOUBLE_EQ(ScoreK(m, 1), 5.0);
  EXPECT_DOUBLE_EQ(ScoreK(m, 3), 5.0);
  EXPECT_DOUBLE_EQ(ScoreK(m, 5), (4 * 5.0 + 3.0) / 5);
  EXPECT_DOUBLE_EQ(ScoreK(m, 8), (4 * 5.0 + 2 * 3.0 + 2 * 1.0) / 8);
  // Heavily tied random maps: every k against the reference.
  cv::Mat q = RandomMap(13, 11, 4, 0.0f, 6.0f);
  for (float& v : cv::Mat_<float>(q)) v = std::floor(v) * 0.5f;
  for (int k = 1; k <= 13 * 11; ++k) ExpectSame(ScoreK(q, k), reference::TopKMean(q, k));
}

// k beyond the pixel count: every pixel is used (the map's mean), no error.
TEST(TopKScoreNodeTest, KLargerThanPixelsUsesAllPixels) {
  cv::Mat m = RandomMap(3, 4, 5);
  ExpectSame(ScoreK(m, 100), cv::mean(m)[0]);
  ExpectSame(ScoreK(m, 10000000), reference::TopKMean(m, 12));
}

// The kernel works on 16-row column segments: a constant map ties every segment maximum (all of
// them are searched), and a single hot column puts the whole top k in a few segments.
TEST(TopKScoreNodeTest, SegmentTiesAndClusters) {
  EXPECT_DOUBLE_EQ(ScoreK(cv::Mat(40, 24, CV_32FC1, cv::Scalar(0.75f)), 100), 0.75);
  cv::Mat m = RandomMap(70, 33, 10, 0.0f, 0.1f);
  for (int y = 0; y < 70; ++y) m.at<float>(y, 5) = 1.0f + 0.01f * float(y % 23);  // ties too
  for (int k : {1, 16, 17, 50, 70, 71, 100}) ExpectSame(ScoreK(m, k), reference::TopKMean(m, k));
}

TEST(TopKScoreNodeTest, SignsZerosInfinitiesAndMagnitudes) {
  cv::Mat m(4, 5, CV_32FC1);
  const float inf = std::numeric_limits<float>::infinity();
  const float v[20] = {-0.0f, 0.0f,  -1e-40f, 1e-40f, -3.5f, 2.5f,  1e30f, -1e-30f, 7.0f,  7.0f,
                       -inf,  1e-3f, 0.0f,    -0.0f,  42.0f, -2.0f, 1.5f,  3e-39f,  -7.0f, 0.5f};
  std::copy(v, v + 20, m.begin<float>());
  for (int k = 1; k <= 19; ++k) ExpectSame(ScoreK(m, k), reference::TopKMean(m, k));
  EXPECT_EQ(ScoreK(m, 20), -inf);  // -inf is the 20th value
  m.at<float>(3, 4) = inf;
  EXPECT_EQ(ScoreK(m, 3), inf);
}

TEST(TopKScoreNodeTest, OneByOneAndNonSquare) {
  EXPECT_DOUBLE_EQ(ScoreK(cv::Mat(1, 1, CV_32FC1, cv::Scalar(-2.25f)), 100), -2.25);
  cv::Mat strip = RandomMap(1, 300, 6);
  ExpectSame(ScoreK(strip, 7), reference::TopKMean(strip, 7));
  cv::Mat big = RandomMap(300, 257, 7);
  cv::Mat roi = big(cv::Rect(3, 5, 101, 211));  // strided rows
  ExpectSame(ScoreK(roi, 100), reference::TopKMean(roi.clone(), 100));
}

TEST(TopKScoreNodeTest, NaNInTheTopKIsAnError) {
  cv::Mat m = RandomMap(8, 8, 8);
  m.at<float>(2, 3) = std::numeric_limits<float>::quiet_NaN();
  NodeRunner runner(R"({"id": "score", "type": "TopKScore", "params": {"k": 5}})");
  runner.push(TopKScoreNode::kIn, Map2D{m});
  EXPECT_THAT([&] { runner.run(); },
              testing::ThrowsMessage<NodeError>(HasSubstr(R"(input "map": has NaN values among its top k)")));
}

TEST(TopKScoreNodeTest, BadParamsAreNamed) {
  EXPECT_THAT([] { NodeRunner r(R"({"id": "score", "type": "TopKScore", "params": {"k": 0}})"); },
              testing::ThrowsMessage<GraphError>(
                  HasSubstr(R"(NodeRunner: node "score" (TopKScore): param "k": must be in [1, 10000000], got 0)")));
  EXPECT_THAT(
      [] { NodeRunner r(R"({"id": "score", "type": "TopKScore", "params": {"k": 2.5}})"); },
      testing::ThrowsMessage<GraphError>(testing::AllOf(HasSubstr(R"(param "k": must be an integer)"), HasSubstr("got 2.5"))));
}

TEST(TopKScoreNodeTest, RejectsAnEmptyMap) {
  NodeRunner runner(R"({"id": "score", "type": "TopKScore"})");
  runner.push(TopKScoreNode::kIn, Map2D{cv::Mat()});
  EXPECT_THAT([&] { runner.run(); }, testing::ThrowsMessage<NodeError>(HasSubstr(R"(input "map": is empty)")));
}

TEST(TopKScoreNodeTest, InferGivesAScalar) {
  Shapes out = TopKScoreNode::infer({}, Shapes{{"map", Shape::of({256, 256})}});
  EXPECT_TRUE(out.at("score").known);
  EXPECT_TRUE(out.at("score").dims.empty());
}

class TopKScoreDeviceTest : public testing::TestWithParam<Device> {};

TEST_P(TopKScoreDeviceTest, MatchesReference) {
  if (GetParam() == Device::kCuda) {
    TopKScoreNode::top_k_mean(cv::Mat(2, 2, CV_32FC1, cv::Scalar(1)), 1, Device::kCuda);  // probe
    if (!hl::cuda_usable()) GTEST_SKIP() << "no CUDA device";
  }
  cv::Mat m = RandomMap(256, 256, 9);
  ExpectSame(Score(m, "{}", GetParam()), reference::TopKMean(m, 100));
}

INSTANTIATE_TEST_SUITE_P(TopKScore, TopKScoreDeviceTest, testing::Values(Device::kCpu, Device::kCuda),
                         [](const testing::TestParamInfo<Device>& i) { return i.param == Device::kCpu ? "cpu" : "cuda"; });

}  // namespace
}  // namespace fmam
