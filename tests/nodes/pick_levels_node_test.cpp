// PickLevels: the listed levels in order, the same tensors; bad indices named at load and at run
// time. And the graph it exists for, graphs/ablations/fmam_rkd_per_level.json: as shipped its map
// is fmam_rkd.json's; with every level raw it is rkd.json's; and since Eq. 8's upsampling and blur
// are linear, a level-j-raw map plus its complement (level j mapped, the others raw) is the sum of
// the raw and the mapped maps.
#include "nodes/pick_levels_node.h"

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

std::vector<at::Tensor> RunPick(const std::string& levels, const std::vector<at::Tensor>& in) {
  NodeRunner runner(R"({"id": "pick", "type": "PickLevels", "params": {"levels": )" + levels + "}}");
  runner.push(PickLevelsNode::kIn, FeaturePyramid{in});
  runner.run();
  return runner.pop(PickLevelsNode::kOut).levels;
}

TEST(PickLevelsNodeTest, KeepsTheListedLevelsInTheirOrderTheSameTensors) {
  const std::vector<at::Tensor> in = {at::rand({2, 1, 16, 16}), at::rand({2, 1, 8, 8}), at::rand({2, 1, 4, 4})};
  const auto out = RunPick("[2, 0]", in);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_TRUE(out[0].is_same(in[2])) << "level 2 first, as listed, and not a copy";
  EXPECT_TRUE(out[1].is_same(in[0]));
  EXPECT_TRUE(RunPick("[]", in).empty()) << "[] keeps none";
}

TEST(PickLevelsNodeTest, ShapesAtLoadAndBadIndicesNamed) {
  PickLevelsNode::Params p;
  p.levels = {1};
  const Shapes out = PickLevelsNode::infer(p, Shapes{{"levels", Shape::pyramid({{1, 64, 64}, {1, 32, 32}})}});
  EXPECT_EQ(out.at("levels").levels, (std::vector<std::vector<int64_t>>{{1, 32, 32}}));
  EXPECT_FALSE(PickLevelsNode::infer(p, Shapes{{"levels", Shape::unknown()}}).at("levels").known);
  p.levels = {0, 2};
  EXPECT_THAT(
      [&] {
        PickLevelsNode::infer(p, Shapes{{"levels", Shape::pyramid({{1, 64, 64}, {1, 32, 32}})}});
      },
      testing::ThrowsMessage<PortError>(HasSubstr(R"(param "levels" names level 2 but the pyramid has 2 (0..1))")));
  EXPECT_THAT([] { NodeRunner r(R"({"id": "pick", "type": "PickLevels", "params": {"levels": [1, 1]}})"); },
              testing::ThrowsMessage<GraphError>(HasSubstr(R"(param "levels": level 1 is listed twice)")));
  EXPECT_THAT([] { NodeRunner r(R"({"id": "pick", "type": "PickLevels", "params": {"levels": [-1]}})"); },
              testing::ThrowsMessage<GraphError>(HasSubstr(R"(param "levels": indices count from 0, got -1)")));
  EXPECT_THAT(
      [] {
        RunPick("[3]", {at::rand({1, 1, 2, 2})});
      },
      testing::ThrowsMessage<NodeError>(HasSubstr(R"(input "levels": param "levels" names level 3 but the pyramid has 1)")));
}

TEST(PickLevelsNodeTest, PerLevelGraphMixesTheRawAndTheMappedMapsLevelByLevel) {
  const std::string src = FMAM_SOURCE_DIR;
  const std::string image = src + "/../shared/data/mvtec_ad/bottle/test/broken_large/000.png";
  if (!fs::exists(image)) GTEST_SKIP() << "no shared image at " << image;
  const fs::path dir = test::process_temp_dir("fmam_pick_levels_test");
  test::save_fmam_rkd_and_rkd_twins(dir);
  const cv::Mat img = cv::imread(image, cv::IMREAD_COLOR);
  auto map_of = [&](const std::string& graph, const std::string& model, std::vector<std::string> sets = {}) {
    return test::fp32_map(graph, (dir / model).string(), img, std::move(sets));
  };
  const std::string per_level = "graphs/ablations/fmam_rkd_per_level.json";
  const cv::Mat mapped = map_of("graphs/fmam_rkd.json", "fmam_rkd.fmam");
  const cv::Mat raw = map_of("graphs/rkd.json", "rkd.fmam");
  EXPECT_GT(cv::norm(mapped, raw, cv::NORM_INF), 0.05) << "the mappings must change the map for this test to mean anything";
  EXPECT_LT(cv::norm(map_of(per_level, "fmam_rkd.fmam"), mapped, cv::NORM_INF), 1e-5) << "as shipped: fmam_rkd.json's map";
  const cv::Mat all_raw = map_of(per_level, "fmam_rkd.fmam", {"raw_pick.levels=[0,1,2]", "mapped_pick.levels=[]"});
  EXPECT_LT(cv::norm(all_raw, raw, cv::NORM_INF), 1e-5) << "every level raw: rkd.json's map";
  const cv::Mat level1_raw = map_of(per_level, "fmam_rkd.fmam", {"raw_pick.levels=[1]", "mapped_pick.levels=[0,2]"});
  const cv::Mat level1_mapped = map_of(per_level, "fmam_rkd.fmam", {"raw_pick.levels=[0,2]", "mapped_pick.levels=[1]"});
  EXPECT_GT(cv::norm(level1_raw, mapped, cv::NORM_INF), 1e-3) << "swapping one level changes the map";
  EXPECT_LT(cv::norm(level1_raw + level1_mapped, raw + mapped, cv::NORM_INF), 1e-4);
}

}  // namespace
}  // namespace fmam
