// CosineDiscrepancy against the plain-loop reference (tests/reference/cosine.h), its edge cases
// (1x1 level, identical -> 0, opposite -> 2, torch's eps convention for tiny and zero vectors)
// and the load-time and run-time level checks.
#include "nodes/cosine_discrepancy_node.h"

#include <ATen/ATen.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "framework/graph.h"
#include "framework/node_runner.h"
#include "tests/reference/cosine.h"

namespace fmam {
namespace {

using testing::HasSubstr;

std::vector<at::Tensor> RunDisc(const std::vector<at::Tensor>& t, const std::vector<at::Tensor>& s) {
  NodeRunner runner(R"({"id": "disc", "type": "CosineDiscrepancy"})");
  runner.push(CosineDiscrepancyNode::kInTeacher, FeaturePyramid{t});
  runner.push(CosineDiscrepancyNode::kInStudent, FeaturePyramid{s});
  runner.run();
  return runner.pop(CosineDiscrepancyNode::kOut).levels;
}

TEST(CosineDiscrepancyNodeTest, MatchesLoopReference) {
  // Batch 2, non-square, one level channels-last (as the Backbone's come).
  const std::vector<at::Tensor> t = {at::randn({2, 64, 12, 20}).contiguous(at::MemoryFormat::ChannelsLast),
                                     at::randn({2, 128, 6, 10}), at::randn({2, 256, 3, 5})};
  const std::vector<at::Tensor> s = {at::randn({2, 64, 12, 20}), at::randn({2, 128, 6, 10}), at::randn({2, 256, 3, 5})};
  const auto maps = RunDisc(t, s);
  ASSERT_EQ(maps.size(), 3u);
  for (size_t j = 0; j < 3; ++j) {
    EXPECT_EQ(maps[j].sizes(), (at::IntArrayRef{2, 1, t[j].size(2), t[j].size(3)}));
    EXPECT_TRUE(at::allclose(maps[j], reference::CosineDiscrepancy(t[j], s[j]), 1e-5, 1e-5)) << "level " << j;
  }
}

TEST(CosineDiscrepancyNodeTest, BothChannelsLastMatchesLoopReference) {
  // Both sides channels-last (the inference networks' outputs): the per-pixel loop, with channel
  // counts that are and are not a multiple of its 16 lanes, and a 1x1 level.
  std::vector<at::Tensor> t = {at::randn({2, 64, 12, 20}), at::randn({2, 37, 6, 10}), at::randn({1, 5, 1, 1}),
                               at::randn({2, 16, 3, 5})};
  std::vector<at::Tensor> s = {at::randn({2, 64, 12, 20}), at::randn({2, 37, 6, 10}), at::randn({1, 5, 1, 1}),
                               at::randn({2, 16, 3, 5})};
  s[3] = t[3].neg();  // opposite everywhere: 2
  for (auto* v : {&t, &s})
    for (auto& x : *v) x = x.contiguous(at::MemoryFormat::ChannelsLast);
  const auto maps = RunDisc(t, s);
  ASSERT_EQ(maps.size(), 4u);
  for (size_t j = 0; j < maps.size(); ++j) {
    EXPECT_EQ(maps[j].sizes(), (at::IntArrayRef{t[j].size(0), 1, t[j].size(2), t[j].size(3)}));
    EXPECT_TRUE(at::allclose(maps[j], reference::CosineDiscrepancy(t[j], s[j]), 1e-5, 1e-5)) << "level " << j;
  }
  EXPECT_TRUE(at::allclose(maps[3], at::full_like(maps[3], 2.0f), 0, 1e-6));
}

TEST(CosineDiscrepancyNodeTest, FusedLoopEqualsTorchsOpAndKeepsGradients) {
  // Without grad the node runs its own one-pass loop; with grad torch's cosine_similarity.
  const std::vector<at::Tensor> t = {at::randn({2, 32, 5, 7}), at::randn({1, 1, 3, 3})};
  const std::vector<at::Tensor> s = {at::randn({2, 32, 5, 7}), at::randn({1, 1, 3, 3})};
  const auto fused = CosineDiscrepancyNode::compute(t, s);
  const at::Tensor tg = t[0].clone().requires_grad_(true);
  const auto torch_op = CosineDiscrepancyNode::compute({tg, t[1]}, s);
  ASSERT_TRUE(torch_op[0].requires_grad());
  for (size_t j = 0; j < 2; ++j) {
    EXPECT_TRUE(at::allclose(fused[j], torch_op[j].detach(), 1e-5, 1e-6)) << "level " << j;
    EXPECT_TRUE(at::allclose(fused[j], at::rsub(at::cosine_similarity(t[j], s[j], 1, 1e-8), 1).unsqueeze(1), 1e-5, 1e-6));
  }
  torch_op[0].sum().backward();
  EXPECT_TRUE(tg.grad().defined());
}

TEST(CosineDiscrepancyNodeTest, IdenticalZeroOppositeTwoOnA1x1Level) {
  const at::Tensor x = at::randn({1, 8, 1, 1});
  auto maps = RunDisc({x, x}, {x, x.neg()});
  ASSERT_EQ(maps[0].sizes(), (at::IntArrayRef{1, 1, 1, 1}));
  EXPECT_NEAR(maps[0].item<float>(), 0.0f, 1e-6);
  EXPECT_NEAR(maps[1].item<float>(), 2.0f, 1e-6);
  // Orthogonal -> 1.
  maps = RunDisc({at::tensor({1.0f, 0.0f}).view({1, 2, 1, 1})}, {at::tensor({0.0f, 3.0f}).view({1, 2, 1, 1})});
  EXPECT_NEAR(maps[0].item<float>(), 1.0f, 1e-6);
}

TEST(CosineDiscrepancyNodeTest, TinyAndZeroVectorsFollowTorchEpsConvention) {
  // torch 1.13 divides each vector by max(||v||, 1e-8): two 1e-9 vectors have cos 0.01 (not 1),
  // a zero vector has cos 0, so D = 0.99 and 1.
  const at::Tensor tiny = at::tensor({1e-9f, 0.0f}).view({1, 2, 1, 1});
  EXPECT_NEAR(RunDisc({tiny}, {tiny})[0].item<float>(), 0.99f, 1e-6);
  EXPECT_NEAR(reference::CosineDiscrepancy(tiny, tiny).item<float>(), 0.99f, 1e-6);
  const at::Tensor zero = at::zeros({1, 2, 1, 1});
  EXPECT_NEAR(RunDisc({zero}, {at::ones({1, 2, 1, 1})})[0].item<float>(), 1.0f, 1e-6);
}

TEST(CosineDiscrepancyNodeTest, LevelMismatchIsALoadError) {
  const std::string g =
      R"({"schema": 1, "name": "t", "inputs": {"image": "Tensor"}, "outputs": {"maps": "FeaturePyramid"},
    "nodes": [
      {"id": "teacher", "type": "Backbone", "in": {"image": "image"}, "out": {"features": "t"}},
      {"id": "other", "type": "Backbone", "in": {"image": "image"}, "out": {"features": "s"},
       "params": {"layers": ["layer2", "layer3", "layer4"]}},
      {"id": "disc", "type": "CosineDiscrepancy", "in": {"teacher": "t", "student": "s"}, "out": {"maps": "maps"}}]})";
  EXPECT_THAT(
      [&] { validate(parse_graph(g, "g.json")); },
      testing::ThrowsMessage<GraphError>(HasSubstr(
          R"(g.json: node "disc" (CosineDiscrepancy): input "student": level 2 has 512 channels, input "teacher" has 256)")));
  CosineDiscrepancyNode::Params p;
  const Shapes ok = CosineDiscrepancyNode::infer(p, Shapes{{"teacher", Shape::pyramid({{64, 64, 64}, {128, 32, 32}})},
                                                           {"student", Shape::pyramid({{64, 64, 64}, {128, -1, -1}})}});
  EXPECT_EQ(ok.at("maps").levels, (std::vector<std::vector<int64_t>>{{1, 64, 64}, {1, 32, 32}}));
  EXPECT_THAT(
      [&] {
        CosineDiscrepancyNode::infer(
            p, Shapes{{"teacher", Shape::pyramid({{64, 64, 64}})}, {"student", Shape::pyramid({{64, 63, 64}})}});
      },
      testing::ThrowsMessage<PortError>(HasSubstr(R"(input "student": level 0 is 63x64 (HxW), input "teacher" is 64x64)")));
}

TEST(CosineDiscrepancyNodeTest, RuntimeSizeMismatchNamesTheLevel) {
  EXPECT_THAT(
      [] {
        RunDisc({at::randn({1, 4, 8, 8})}, {at::randn({1, 4, 8, 9})});
      },
      testing::ThrowsMessage<NodeError>(HasSubstr(R"(input "student": level 0 is 8x9 (HxW), input "teacher" is 8x8)")));
}

}  // namespace
}  // namespace fmam
