// UpsampleSum against torch F.interpolate values (tests/testdata/upsample_fixture.txt, made once by
// `/usr/bin/python3 tests/testdata/make_upsample_fixture.py` with Debian's torch 1.13) for both
// align_corners settings and both modes, against the plain-loop reference
// (tests/reference/upsample.h) at the paper's sizes, plus edge sizes, infer() and param errors.
#include "nodes/upsample_sum_node.h"

#include <ATen/ops/from_blob.h>
#include <ATen/ops/zeros.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <opencv2/core.hpp>
#include <sstream>

#include "framework/graph.h"
#include "framework/node_runner.h"
#include "nodes/halide_support.h"
#include "tests/reference/upsample.h"
#include "tests/support/helpers.h"

namespace fmam {
namespace {

using testing::HasSubstr;

// The fixture file: name -> rows x cols float map.
std::map<std::string, cv::Mat> LoadFixture() {
  std::ifstream f(std::string(FMAM_SOURCE_DIR) + "/tests/testdata/upsample_fixture.txt");
  EXPECT_TRUE(f.good()) << "missing tests/testdata/upsample_fixture.txt";
  std::map<std::string, cv::Mat> out;
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream head(line);
    std::string name;
    int rows = 0, cols = 0;
    head >> name >> rows >> cols;
    cv::Mat m(rows, cols, CV_32FC1);
    std::getline(f, line);
    std::istringstream values(line);
    for (int i = 0; i < rows * cols; ++i) values >> m.at<float>(i / cols, i % cols);
    out[name] = m;
  }
  return out;
}

// A [1, 1, h, w] tensor holding a copy of the map.
at::Tensor Level(const cv::Mat& m) {
  cv::Mat c = m.clone();
  return at::from_blob(c.data, {1, 1, c.rows, c.cols}, at::kFloat).clone();
}

using test::RandomMap;

// Against the double-precision reference: the kernel, like torch, computes sampling positions in
// float32 (x * 63 / 255 is off by up to ~4e-6 pixels), so values differ by a few 1e-6. The torch
// fixture tests hold the kernel to 1e-6 of torch itself.
constexpr double kRefTol = 1e-5;

double MaxAbsDiff(const cv::Mat& a, const cv::Mat& b) {
  EXPECT_EQ(a.size(), b.size());
  if (a.size() != b.size()) return INFINITY;
  return cv::norm(a, b, cv::NORM_INF);
}

cv::Mat RunUpsample(const std::vector<cv::Mat>& levels, const std::string& params, Device device = Device::kCpu) {
  RunOptions o;
  o.device = device;
  NodeRunner runner(R"({"id": "up", "type": "UpsampleSum", "params": )" + params + "}", o);
  FeaturePyramid p;
  for (const cv::Mat& l : levels) p.levels.push_back(Level(l));
  runner.push(UpsampleSumNode::kIn, p);
  runner.run();
  return runner.pop(UpsampleSumNode::kOut).mat;
}

class UpsampleSumTorchTest : public testing::Test {
 protected:
  static void SetUpTestSuite() { fixture_ = new std::map<std::string, cv::Mat>(LoadFixture()); }
  static void TearDownTestSuite() { delete fixture_; }
  const cv::Mat& at(const std::string& name) { return fixture_->at(name); }
  static std::map<std::string, cv::Mat>* fixture_;
};
std::map<std::string, cv::Mat>* UpsampleSumTorchTest::fixture_ = nullptr;

// Convention: align_corners = true (RD4AD, anomalib) is the default.
TEST_F(UpsampleSumTorchTest, AlignCornersTrueIsTheDefaultAndMatchesTorch) {
  EXPECT_LT(MaxAbsDiff(RunUpsample({at("level0")}, R"({"width": 9, "height": 7})"), at("level0_up_ac1")), 1e-6);
  EXPECT_LT(MaxAbsDiff(RunUpsample({at("level0"), at("level1")}, R"({"width": 9, "height": 7})"), at("sum_ac1")), 1e-6);
  EXPECT_LT(MaxAbsDiff(RunUpsample({at("down_in")}, R"({"width": 2, "height": 3, "align_corners": true})"), at("down_ac1")),
            1e-6);
}

TEST_F(UpsampleSumTorchTest, AlignCornersFalseMatchesTorch) {
  const std::string p = R"({"width": 9, "height": 7, "align_corners": false})";
  EXPECT_LT(MaxAbsDiff(RunUpsample({at("level0")}, p), at("level0_up_ac0")), 1e-6);
  EXPECT_LT(MaxAbsDiff(RunUpsample({at("level0"), at("level1")}, p), at("sum_ac0")), 1e-6);
  EXPECT_LT(MaxAbsDiff(RunUpsample({at("down_in")}, R"({"width": 2, "height": 3, "align_corners": false})"), at("down_ac0")),
            1e-6);
}

// anomalib's AnomalyMapGenerationMode.MULTIPLY: start from ones, multiply the upsampled levels.
TEST_F(UpsampleSumTorchTest, MultiplyModeMatchesTorch) {
  EXPECT_LT(MaxAbsDiff(RunUpsample({at("level0"), at("level1")}, R"({"width": 9, "height": 7, "mode": "multiply"})"),
                       at("product_ac1")),
            2e-6);
  EXPECT_LT(MaxAbsDiff(RunUpsample({at("level0"), at("level1")},
                                   R"({"width": 9, "height": 7, "mode": "multiply", "align_corners": false})"),
                       at("product_ac0")),
            2e-6);
}

TEST_F(UpsampleSumTorchTest, TheReferenceAgreesWithTorch) {  // so the reference may stand in
  for (bool ac : {true, false}) {
    const std::string tag = ac ? "ac1" : "ac0";
    EXPECT_LT(MaxAbsDiff(reference::UpsampleSum({at("level0"), at("level1")}, 7, 9, ac), at("sum_" + tag)), 1e-6);
    EXPECT_LT(MaxAbsDiff(reference::UpsampleSum({at("down_in")}, 3, 2, ac), at("down_" + tag)), 1e-6);
  }
}

// The paper's pyramid: layer1-3 discrepancy maps at 64, 32, 16 -> 256x256.
TEST(UpsampleSumNodeTest, PaperPyramidMatchesReference) {
  std::vector<cv::Mat> levels = {RandomMap(64, 64, 1), RandomMap(32, 32, 2), RandomMap(16, 16, 3)};
  for (bool ac : {true, false}) {
    cv::Mat out = RunUpsample(levels, ac ? "{}" : R"({"align_corners": false})");
    EXPECT_LT(MaxAbsDiff(out, reference::UpsampleSum(levels, 256, 256, ac)), kRefTol) << ac;
  }
  cv::Mat prod = RunUpsample(levels, R"({"mode": "multiply"})");
  EXPECT_LT(MaxAbsDiff(prod, reference::UpsampleSum(levels, 256, 256, true, true)), kRefTol);
}

// Per-level weights scale each level before the sum: the reference run on pre-scaled levels.
TEST(UpsampleSumNodeTest, WeightsScaleEachLevelBeforeTheyAdd) {
  std::vector<cv::Mat> levels = {RandomMap(64, 64, 1), RandomMap(32, 32, 2), RandomMap(16, 16, 3)};
  const std::vector<float> weights = {0.5f, 2.0f, 0.0f};
  std::vector<cv::Mat> scaled;
  for (size_t j = 0; j < levels.size(); ++j) scaled.push_back(levels[j] * weights[j]);
  cv::Mat out = RunUpsample(levels, R"({"weights": [0.5, 2, 0]})");
  EXPECT_LT(MaxAbsDiff(out, reference::UpsampleSum(scaled, 256, 256, true)), kRefTol);
  EXPECT_GT(MaxAbsDiff(out, reference::UpsampleSum(levels, 256, 256, true)), 0.1);  // they did change it
  // All ones is Eq. 8 exactly, as is no weights at all.
  EXPECT_EQ(MaxAbsDiff(RunUpsample(levels, R"({"weights": [1, 1, 1]})"), RunUpsample(levels, "{}")), 0.0);
}

TEST(UpsampleSumNodeTest, WeightsMustMatchTheLevelsAndBeFactors) {
  UpsampleSumNode::Params two;
  two.weights = {1.0f, 2.0f};
  EXPECT_THAT(
      [&] {
        UpsampleSumNode::infer(two, Shapes{{"maps", Shape::pyramid({{1, 8, 8}, {1, 4, 4}, {1, 2, 2}})}});
      },
      testing::ThrowsMessage<PortError>(HasSubstr(R"(has 3 levels but param "weights" gives 2)")));
  NodeRunner runner(R"({"id": "up", "type": "UpsampleSum", "params": {"weights": [1, 2]}})");
  runner.push(UpsampleSumNode::kIn, FeaturePyramid{{at::zeros({1, 1, 8, 8})}});
  EXPECT_THAT([&] { runner.run(); }, testing::ThrowsMessage<NodeError>(HasSubstr(R"(has 1 level but param "weights" gives 2)")));
  EXPECT_THAT([] { NodeRunner r(R"({"id": "up", "type": "UpsampleSum", "params": {"weights": [1, -0.5]}})"); },
              testing::ThrowsMessage<GraphError>(
                  HasSubstr(R"(param "weights": level 1's weight must be a finite number >= 0, got -0.5)")));
}

TEST(UpsampleSumNodeTest, NonSquareOutputAndLevels) {
  std::vector<cv::Mat> levels = {RandomMap(12, 20, 4), RandomMap(5, 3, 5)};
  for (bool ac : {true, false}) {
    cv::Mat out =
        RunUpsample(levels, std::string(R"({"width": 40, "height": 23, "align_corners": )") + (ac ? "true" : "false") + "}");
    ASSERT_EQ(out.size(), cv::Size(40, 23));
    EXPECT_LT(MaxAbsDiff(out, reference::UpsampleSum(levels, 23, 40, ac)), kRefTol) << ac;
  }
}

TEST(UpsampleSumNodeTest, OneByOneLevelAndOutput) {
  cv::Mat one(1, 1, CV_32FC1, cv::Scalar(0.25f));
  cv::Mat out = RunUpsample({one}, R"({"width": 5, "height": 3})");
  EXPECT_EQ(cv::countNonZero(out != 0.25f), 0);  // one pixel upsamples to a constant
  // A 1x1 output samples (0, 0) with align_corners, the middle 2x2 mean of a 4x4 level without.
  cv::Mat four = RandomMap(4, 4, 6);
  EXPECT_FLOAT_EQ(RunUpsample({four}, R"({"width": 1, "height": 1})").at<float>(0, 0), four.at<float>(0, 0));
  const float mid = (four.at<float>(1, 1) + four.at<float>(1, 2) + four.at<float>(2, 1) + four.at<float>(2, 2)) / 4;
  EXPECT_NEAR(RunUpsample({four}, R"({"width": 1, "height": 1, "align_corners": false})").at<float>(0, 0), mid, 1e-6);
}

TEST(UpsampleSumNodeTest, AcceptsNonContiguousAndDoubleLevels) {
  cv::Mat m = RandomMap(8, 6, 7);
  at::Tensor t = Level(m);
  at::Tensor nc = t.transpose(2, 3).contiguous().transpose(2, 3);  // same values, strided
  FeaturePyramid p{{nc, t.to(at::kDouble)}};
  NodeRunner runner(R"({"id": "up", "type": "UpsampleSum", "params": {"width": 16, "height": 16}})");
  runner.push(UpsampleSumNode::kIn, p);
  runner.run();
  EXPECT_LT(MaxAbsDiff(runner.pop(UpsampleSumNode::kOut).mat, reference::UpsampleSum({m, m}, 16, 16, true)), kRefTol);
}

TEST(UpsampleSumNodeTest, InferGivesTheOutputSize) {
  UpsampleSumNode::Params p;
  p.width = 320;
  p.height = 200;
  Shapes out = UpsampleSumNode::infer(p, Shapes{{"maps", Shape::pyramid({{1, 64, 64}, {1, 32, 32}})}});
  EXPECT_EQ(out.at("map").dims, (std::vector<int64_t>{200, 320}));
  Shapes unknown = UpsampleSumNode::infer(p, Shapes{{"maps", Shape::unknown()}});
  EXPECT_EQ(unknown.at("map").dims, (std::vector<int64_t>{200, 320}));
}

TEST(UpsampleSumNodeTest, InferRejectsATwoChannelLevel) {
  EXPECT_THAT(
      [] {
        UpsampleSumNode::infer({}, Shapes{{"maps", Shape::pyramid({{1, 64, 64}, {2, 32, 32}, {1, 16, 16}})}});
      },
      testing::ThrowsMessage<PortError>(HasSubstr(R"(input "maps": level 1 has 2 channels)")));
}

TEST(UpsampleSumNodeTest, RejectsATwoChannelLevelAtRunTime) {
  NodeRunner runner(R"({"id": "up", "type": "UpsampleSum"})");
  runner.push(UpsampleSumNode::kIn, FeaturePyramid{{at::zeros({1, 1, 8, 8}), at::zeros({1, 2, 4, 4})}});
  EXPECT_THAT([&] { runner.run(); }, testing::ThrowsMessage<NodeError>(HasSubstr(R"(input "maps": level 1 has 2 channels)")));
}

TEST(UpsampleSumNodeTest, BadParamsAreNamed) {
  EXPECT_THAT([] { NodeRunner r(R"({"id": "up", "type": "UpsampleSum", "params": {"mode": "sum"}})"); },
              testing::ThrowsMessage<GraphError>(
                  HasSubstr(R"(node "up" (UpsampleSum): param "mode": must be one of: add, multiply; got "sum")")));
  EXPECT_THAT([] { NodeRunner r(R"({"id": "up", "type": "UpsampleSum", "params": {"width": 0}})"); },
              testing::ThrowsMessage<GraphError>(HasSubstr(R"(param "width": must be in [1, 8192], got 0)")));
  EXPECT_THAT([] { NodeRunner r(R"({"id": "up", "type": "UpsampleSum", "params": {"align_corners": 1}})"); },
              testing::ThrowsMessage<GraphError>(HasSubstr(R"(param "align_corners": must be true or false)")));
}

class UpsampleSumDeviceTest : public testing::TestWithParam<Device> {};

TEST_P(UpsampleSumDeviceTest, MatchesReference) {
  if (GetParam() == Device::kCuda) {
    UpsampleSumNode::upsample_sum({at::zeros({1, 1, 2, 2})}, {}, Device::kCuda);  // probe
    if (!hl::cuda_usable()) GTEST_SKIP() << "no CUDA device";
  }
  std::vector<cv::Mat> levels = {RandomMap(64, 64, 8), RandomMap(32, 32, 9), RandomMap(16, 16, 10)};
  EXPECT_LT(MaxAbsDiff(RunUpsample(levels, "{}", GetParam()), reference::UpsampleSum(levels, 256, 256, true)), kRefTol);
}

INSTANTIATE_TEST_SUITE_P(UpsampleSum, UpsampleSumDeviceTest, testing::Values(Device::kCpu, Device::kCuda),
                         [](const testing::TestParamInfo<Device>& i) { return i.param == Device::kCpu ? "cpu" : "cuda"; });

}  // namespace
}  // namespace fmam
