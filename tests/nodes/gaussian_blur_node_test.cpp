// GaussianBlur against the plain-loop scipy reference (tests/reference/gaussian_blur.h), its two
// conventions by name (radius int(4 sigma + 0.5), half-sample reflect borders), edge sizes, param
// and input errors, and CPU/CUDA parity.
#include "nodes/gaussian_blur_node.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <opencv2/core.hpp>

#include "framework/graph.h"
#include "framework/node_runner.h"
#include "nodes/halide_support.h"
#include "tests/reference/gaussian_blur.h"
#include "tests/support/helpers.h"

namespace fmam {
namespace {

using testing::HasSubstr;

cv::Mat Impulse(int h, int w, int y, int x) {
  cv::Mat m(h, w, CV_32FC1, cv::Scalar(0));
  m.at<float>(y, x) = 1.0f;
  return m;
}

// Values in [0, 2): a blur test's maps, unlike a score's, need not look like probabilities.
cv::Mat RandomMap(int h, int w, uint64_t seed) { return test::RandomMap(h, w, seed, 0.0f, 2.0f); }

// Largest |a - b| over the map; the maps must have the same size.
double MaxAbsDiff(const cv::Mat& a, const cv::Mat& b) {
  EXPECT_EQ(a.size(), b.size());
  if (a.size() != b.size()) return INFINITY;
  return cv::norm(a, b, cv::NORM_INF);
}

cv::Mat RunBlur(const cv::Mat& in, const std::string& params = "{}", Device device = Device::kCpu) {
  RunOptions o;
  o.device = device;
  NodeRunner runner(R"({"id": "blur", "type": "GaussianBlur", "params": )" + params + "}", o);
  runner.push(GaussianBlurNode::kIn, Map2D{in});
  runner.run();
  return runner.pop(GaussianBlurNode::kOut).mat;
}

TEST(GaussianBlurNodeTest, ImpulseMatchesReference) {
  cv::Mat in = Impulse(64, 64, 20, 41);
  cv::Mat out = RunBlur(in, R"({"sigma": 2.0})");
  EXPECT_LT(MaxAbsDiff(out, reference::GaussianBlur(in, 2.0)), 1e-7);
  EXPECT_NEAR(cv::sum(out)[0], 1.0, 1e-5);  // normalised weights keep the mass
}

TEST(GaussianBlurNodeTest, RandomNonSquareMatchesReferenceAtDefaultSigma) {
  cv::Mat in = RandomMap(37, 53, 7);  // default sigma 4: radius 16, wider than half the map
  EXPECT_LT(MaxAbsDiff(RunBlur(in), reference::GaussianBlur(in, 4.0)), 2e-6);
}

TEST(GaussianBlurNodeTest, RandomMatchesReferenceAcrossSigmas) {
  cv::Mat in = RandomMap(96, 80, 11);
  for (double sigma : {0.5, 1.3, 4.0, 7.25, 32.0}) {
    cv::Mat out = RunBlur(in, "{\"sigma\": " + std::to_string(sigma) + "}");
    EXPECT_LT(MaxAbsDiff(out, reference::GaussianBlur(in, sigma)), 2e-6) << "sigma " << sigma;
  }
}

// Convention: scipy's truncate = 4, radius = int(4 * sigma + 0.5). The impulse response reaches
// exactly `radius` pixels and not one more (anomalib: kernel size 2 * radius + 1).
TEST(GaussianBlurNodeTest, RadiusIsIntFourSigmaPlusHalf) {
  const struct {
    double sigma;
    int radius;
  } cases[] = {{0.5, 2}, {1.1, 4}, {1.125, 5}, {2.0, 8}, {4.0, 16}, {4.1, 16}, {4.2, 17}};
  for (const auto& c : cases) {
    ASSERT_EQ(reference::GaussianRadius(c.sigma), c.radius) << c.sigma;
    cv::Mat out = RunBlur(Impulse(81, 81, 40, 40), "{\"sigma\": " + std::to_string(c.sigma) + "}");
    EXPECT_GT(out.at<float>(40, 40 + c.radius), 0.0f) << "sigma " << c.sigma;
    EXPECT_EQ(out.at<float>(40, 40 + c.radius + 1), 0.0f) << "sigma " << c.sigma;
    EXPECT_GT(out.at<float>(40 - c.radius, 40), 0.0f) << "sigma " << c.sigma;
    EXPECT_EQ(out.at<float>(40 - c.radius - 1, 40), 0.0f) << "sigma " << c.sigma;
  }
}

// Convention: scipy mode 'reflect' = half-sample symmetric (d c b a | a b c d): the pixel just
// outside the border is the border pixel itself. An impulse in the corner therefore gets its own
// weight twice along each axis: (w0 + w1)^2 (whole-sample 'mirror' would give w0^2, 'constant'
// w0^2 too, 'nearest' the sum of all outside taps).
TEST(GaussianBlurNodeTest, ReflectBorderIsHalfSampleSymmetric) {
  const double sigma = 2.0;
  cv::Mat in = Impulse(40, 30, 0, 0);
  cv::Mat out = RunBlur(in, R"({"sigma": 2.0})");
  const std::vector<double> w = reference::GaussianWeights(sigma);
  const int r = reference::GaussianRadius(sigma);
  // (x, y) = (0, 0) reads x - 1 -> 0, x - 2 -> 1, ...: weights w[r] + w[r-1] land on the impulse.
  EXPECT_NEAR(out.at<float>(0, 0), (w[r] + w[r - 1]) * (w[r] + w[r - 1]), 1e-7);
  EXPECT_NEAR(out.at<float>(0, 1), (w[r + 1] + w[r - 2]) * (w[r] + w[r - 1]), 1e-7);
  EXPECT_LT(MaxAbsDiff(out, reference::GaussianBlur(in, sigma)), 1e-7);
  EXPECT_NEAR(cv::sum(out)[0], 1.0, 1e-5);  // reflection loses no mass
}

TEST(GaussianBlurNodeTest, OneByOneAndStripsMatchReference) {
  cv::Mat one(1, 1, CV_32FC1, cv::Scalar(3.5f));
  EXPECT_FLOAT_EQ(RunBlur(one).at<float>(0, 0), 3.5f);  // reflecting one pixel: a constant
  for (cv::Size s : {cv::Size(7, 1), cv::Size(1, 5), cv::Size(3, 2), cv::Size(17, 1)}) {
    cv::Mat in = RandomMap(s.height, s.width, 3);
    EXPECT_LT(MaxAbsDiff(RunBlur(in, R"({"sigma": 3.0})"), reference::GaussianBlur(in, 3.0)), 2e-6) << s.width << "x" << s.height;
  }
}

TEST(GaussianBlurNodeTest, RespectsRowStrideOfARoi) {
  cv::Mat big = RandomMap(50, 60, 5);
  cv::Mat roi = big(cv::Rect(7, 3, 33, 41));  // not continuous: row stride 60
  EXPECT_LT(MaxAbsDiff(RunBlur(roi), reference::GaussianBlur(roi.clone(), 4.0)), 2e-6);
}

// Frames in flight at once: concurrent kernel calls, each with parallel loops on the same TBB pool.
TEST(GaussianBlurNodeTest, ManyFramesInFlightMatchReference) {
  NodeRunner runner(R"({"id": "blur", "type": "GaussianBlur", "params": {"sigma": 2.5}})");
  std::vector<cv::Mat> in;
  for (int i = 0; i < 12; ++i) {
    in.push_back(RandomMap(64 + 8 * i, 96, 100 + i));
    runner.push(GaussianBlurNode::kIn, Map2D{in.back()});
  }
  runner.run();
  for (const cv::Mat& m : in)
    EXPECT_LT(MaxAbsDiff(runner.pop(GaussianBlurNode::kOut).mat, reference::GaussianBlur(m, 2.5)), 2e-6);
}

TEST(GaussianBlurNodeTest, BadParamsAreNamed) {
  EXPECT_THAT([] { NodeRunner r(R"({"id": "blur", "type": "GaussianBlur", "params": {"sigma": -1}})"); },
              testing::ThrowsMessage<GraphError>(
                  HasSubstr(R"(NodeRunner: node "blur" (GaussianBlur): param "sigma": must be in [0.5, 32], got -1)")));
  EXPECT_THAT([] { NodeRunner r(R"({"id": "blur", "type": "GaussianBlur", "params": {"sigma": "4"}})"); },
              testing::ThrowsMessage<GraphError>(HasSubstr(R"(param "sigma": must be a number)")));
}

TEST(GaussianBlurNodeTest, RejectsANonFloatMap) {
  NodeRunner runner(R"({"id": "blur", "type": "GaussianBlur"})");
  runner.push(GaussianBlurNode::kIn, Map2D{cv::Mat(4, 4, CV_8UC1, cv::Scalar(1))});
  EXPECT_THAT([&] { runner.run(); }, testing::ThrowsMessage<NodeError>(HasSubstr(R"(input "map": expected HxW float32)")));
}

TEST(GaussianBlurNodeTest, InferKeepsTheShape) {
  Shapes out = GaussianBlurNode::infer({}, Shapes{{"map", Shape::of({24, 40})}});
  EXPECT_EQ(out.at("map").dims, (std::vector<int64_t>{24, 40}));
  EXPECT_THROW(GaussianBlurNode::infer({}, Shapes{{"map", Shape::of({3, 24, 40})}}), PortError);
}

// Device parity (one body per device). Without a usable GPU the cuda instance is skipped here;
// tests/halide/halide_runtime_test.cpp checks the CPU fallback itself.
class GaussianBlurDeviceTest : public testing::TestWithParam<Device> {};

TEST_P(GaussianBlurDeviceTest, MatchesReference) {
  if (GetParam() == Device::kCuda) {
    GaussianBlurNode::blur(cv::Mat(8, 8, CV_32FC1, cv::Scalar(0)), 1.0f, Device::kCuda);  // probe
    if (!hl::cuda_usable()) GTEST_SKIP() << "no CUDA device";
  }
  cv::Mat in = RandomMap(256, 256, 21);
  EXPECT_LT(MaxAbsDiff(RunBlur(in, "{}", GetParam()), reference::GaussianBlur(in, 4.0)), 2e-6);
}

INSTANTIATE_TEST_SUITE_P(GaussianBlur, GaussianBlurDeviceTest, testing::Values(Device::kCpu, Device::kCuda),
                         [](const testing::TestParamInfo<Device>& i) { return i.param == Device::kCpu ? "cpu" : "cuda"; });

}  // namespace
}  // namespace fmam
