// ConcatLevels: a's levels then b's, the same tensors; shapes at load; a batch mismatch is an
// error naming the port. And the graph it exists for, graphs/ablations/fmam_rkd_raw_plus_mapped.json:
// its map is fmam_rkd.json's map (mapped features) plus rkd.json's (raw features) of the same
// weights, each run through its own graph (Eq. 8's upsampling and blur are linear).
#include "nodes/concat_levels_node.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <opencv2/imgcodecs.hpp>

#include "fmam/pipeline.h"
#include "framework/graph.h"
#include "framework/node_runner.h"
#include "tests/support/helpers.h"
#include "tests/support/map_ablation.h"

namespace fmam {
namespace {

namespace fs = std::filesystem;
using testing::HasSubstr;

std::vector<at::Tensor> RunConcat(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  NodeRunner runner(R"({"id": "both", "type": "ConcatLevels"})");
  runner.push(ConcatLevelsNode::kInA, FeaturePyramid{a});
  runner.push(ConcatLevelsNode::kInB, FeaturePyramid{b});
  runner.run();
  return runner.pop(ConcatLevelsNode::kOut).levels;
}

TEST(ConcatLevelsNodeTest, ALevelsThenBsTheSameTensors) {
  const std::vector<at::Tensor> a = {at::rand({2, 1, 16, 16}), at::rand({2, 1, 8, 8})};
  const std::vector<at::Tensor> b = {at::rand({2, 1, 4, 4}), at::rand({2, 1, 16, 16}), at::rand({2, 1, 2, 2})};
  const auto out = RunConcat(a, b);
  ASSERT_EQ(out.size(), 5u);
  for (size_t j = 0; j < 5; ++j) {
    const at::Tensor& want = j < 2 ? a[j] : b[j - 2];
    EXPECT_TRUE(out[j].is_same(want)) << "level " << j << " is the input's tensor, not a copy";
  }
  EXPECT_EQ(RunConcat({}, b).size(), 3u) << "an empty side adds nothing";
}

TEST(ConcatLevelsNodeTest, ShapesJoinAtLoadAndUnknownStaysUnknown) {
  ConcatLevelsNode::Params p;
  const Shapes out =
      ConcatLevelsNode::infer(p, Shapes{{"a", Shape::pyramid({{1, 64, 64}, {1, 32, 32}})}, {"b", Shape::pyramid({{1, 16, 16}})}});
  EXPECT_EQ(out.at("levels").levels, (std::vector<std::vector<int64_t>>{{1, 64, 64}, {1, 32, 32}, {1, 16, 16}}));
  EXPECT_FALSE(
      ConcatLevelsNode::infer(p, Shapes{{"a", Shape::unknown()}, {"b", Shape::pyramid({{1, 16, 16}})}}).at("levels").known);
}

TEST(ConcatLevelsNodeTest, BatchMismatchNamesThePortAndBothBatches) {
  EXPECT_THAT(
      [] {
        RunConcat({at::rand({2, 1, 4, 4})}, {at::rand({3, 1, 4, 4})});
      },
      testing::ThrowsMessage<NodeError>(HasSubstr(R"(input "b": has batch 3 but input "a" has 2)")));
  EXPECT_THAT(
      [] {
        RunConcat({at::rand({2, 1, 4, 4}), at::rand({1, 1, 2, 2})}, {});
      },
      testing::ThrowsMessage<NodeError>(HasSubstr(R"(input "a": level 1 has batch 1, level 0 has 2)")));
  EXPECT_THAT([] { RunConcat({at::Tensor()}, {}); },
              testing::ThrowsMessage<NodeError>(HasSubstr(R"(input "a": level 0 is empty)")));
}

// The ablation graph's map, against the two shipped graphs run on the same weights: the random
// mappings of an untrained model make the mapped map differ from the raw one, so dropping or
// doubling either side fails.
TEST(ConcatLevelsNodeTest, RawPlusMappedGraphsMapIsTheSumOfRkdsAndFmamRkds) {
  const std::string src = FMAM_SOURCE_DIR;
  const std::string image = src + "/../shared/data/mvtec_ad/bottle/test/broken_large/000.png";
  if (!fs::exists(image)) GTEST_SKIP() << "no shared image at " << image;
  const fs::path dir = test::process_temp_dir("fmam_concat_levels_test");
  test::save_fmam_rkd_and_rkd_twins(dir);
  const cv::Mat img = cv::imread(image, cv::IMREAD_COLOR);
  auto map_of = [&](const std::string& graph, const std::string& model) {
    return test::fp32_map(graph, (dir / model).string(), img);
  };
  const cv::Mat mapped = map_of("graphs/fmam_rkd.json", "fmam_rkd.fmam");
  const cv::Mat raw = map_of("graphs/rkd.json", "rkd.fmam");
  const cv::Mat both = map_of("graphs/ablations/fmam_rkd_raw_plus_mapped.json", "fmam_rkd.fmam");
  ASSERT_EQ(both.size(), cv::Size(64, 64));
  EXPECT_GT(cv::norm(mapped, raw, cv::NORM_INF), 0.05) << "the mappings must change the map for this test to mean anything";
  EXPECT_LT(cv::norm(both, mapped + raw, cv::NORM_INF), 1e-4);
}

}  // namespace
}  // namespace fmam
