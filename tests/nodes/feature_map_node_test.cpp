// FeatureMap against the plain-loop reference (tests/reference/feature_map.h: a 1x1 conv is a
// matrix product per pixel), shared weights across the two sides, its learned state, and the
// load-time level checks.
#include "nodes/feature_map_node.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "framework/cpu_features.h"
#include "framework/executor.h"
#include "framework/graph.h"
#include "framework/node_runner.h"
#include "tests/reference/feature_map.h"

namespace fmam {
namespace {

using testing::HasSubstr;

std::map<std::string, at::Tensor> StateMap(const FeatureMapNode& n) {
  std::map<std::string, at::Tensor> m;
  for (const auto& [k, v] : n.named_state()) m[k] = v;
  return m;
}

TEST(FeatureMapNodeTest, MatchesLoopReference) {
  NodeRunner runner(R"({"id": "fm", "type": "FeatureMap",
                        "params": {"channels": [4, 6, 3], "hidden_ratio": 1.5, "seed": 5}})");
  // Batch of 2; non-square levels; a 1x1 level. The teacher's side channels-last, as the
  // Backbone sends it (inference runs oneDNN's 1x1 convs in that format).
  std::vector<at::Tensor> t = {at::randn({2, 4, 3, 5}), at::randn({2, 6, 2, 2}), at::randn({2, 3, 1, 1})};
  for (auto& x : t) x = x.contiguous(at::MemoryFormat::ChannelsLast);
  const std::vector<at::Tensor> s = {at::randn({2, 4, 3, 5}), at::randn({2, 6, 2, 2}), at::randn({2, 3, 1, 1})};
  runner.push(FeatureMapNode::kInTeacher, FeaturePyramid{t});
  runner.push(FeatureMapNode::kInStudent, FeaturePyramid{s});
  runner.run();
  const auto ft = runner.pop(FeatureMapNode::kOutTeacher).levels;
  const auto fs = runner.pop(FeatureMapNode::kOutStudent).levels;
  const auto w = StateMap(dynamic_cast<FeatureMapNode&>(runner.node()));
  ASSERT_EQ(ft.size(), 3u);
  for (size_t j = 0; j < 3; ++j) {
    const std::string l = "level" + std::to_string(j);
    EXPECT_EQ(w.at(l + ".fc1.weight").size(0), std::vector<int64_t>({6, 9, 5})[j]);  // round(1.5 * C_j)
    for (const auto& [in, out] : {std::make_pair(t[j], ft[j]), std::make_pair(s[j], fs[j])}) {
      const at::Tensor ref = reference::FeatureMapLevel(in, w.at(l + ".fc1.weight"), w.at(l + ".fc1.bias"),
                                                        w.at(l + ".fc2.weight"), w.at(l + ".fc2.bias"));
      EXPECT_TRUE(at::allclose(out, ref, 1e-4, 1e-5)) << l;
    }
  }
}

TEST(FeatureMapNodeTest, OneSetOfWeightsForBothSides) {
  NodeRunner runner(R"({"id": "fm", "type": "FeatureMap"})");
  const std::vector<at::Tensor> x = {at::randn({1, 64, 16, 16}), at::randn({1, 128, 8, 8}), at::randn({1, 256, 4, 4})};
  runner.push(FeatureMapNode::kInTeacher, FeaturePyramid{x});
  runner.push(FeatureMapNode::kInStudent, FeaturePyramid{x});
  runner.run();
  const auto ft = runner.pop(FeatureMapNode::kOutTeacher).levels;
  const auto fs = runner.pop(FeatureMapNode::kOutStudent).levels;
  for (size_t j = 0; j < 3; ++j) {
    EXPECT_TRUE(at::equal(ft[j], fs[j])) << "level " << j;
    EXPECT_EQ(ft[j].sizes(), x[j].sizes());
  }
}

TEST(FeatureMapNodeTest, StateNamesSeedsAndTraining) {
  FeatureMapNode::Params p;
  p.seed = 3;
  FeatureMapNode a(p), b(p);
  p.seed = 4;
  FeatureMapNode c(p);
  std::vector<std::string> names;
  for (const auto& [k, v] : a.named_state()) names.push_back(k + " " + std::to_string(v.dim()));
  EXPECT_EQ(names.front(), "level0.fc1.weight 4");
  EXPECT_EQ(names.size(), 12u);  // 3 levels x 2 convs x (weight, bias)
  EXPECT_TRUE(at::equal(a.named_state()[0].second, b.named_state()[0].second));
  EXPECT_FALSE(at::equal(a.named_state()[0].second, c.named_state()[0].second));
  c.load_state(StateMap(a));
  EXPECT_TRUE(at::equal(a.named_state()[0].second, c.named_state()[0].second));

  // Training: teacher features are inference tensors, still the map's weights get gradients.
  std::vector<at::Tensor> t;
  {
    c10::InferenceMode guard;
    t = {at::randn({1, 64, 4, 4}), at::randn({1, 128, 2, 2}), at::randn({1, 256, 1, 1})};
  }
  a.train(true);
  auto out = a.forward(t);
  ASSERT_TRUE(out[0].requires_grad());
  (out[0].sum() + out[1].sum() + out[2].sum()).backward();
  for (const auto& prm : a.parameters()) EXPECT_TRUE(prm.grad().defined());
  a.train(false);
  EXPECT_FALSE(a.forward(t)[0].requires_grad());
}

// bf16-mixed training: the mapped features stay float32, close to the float32 ones, with
// gradients; eval mode is unchanged.
TEST(FeatureMapNodeTest, Bf16MixedTrainingKeepsFloat32Outputs) {
  if (!cpu_has_bf16_kernels())
    GTEST_SKIP() << "oneDNN has no bfloat16 kernels for this CPU (no AVX-512): PyTorch's fallback sums in bfloat16";
  FeatureMapNode::Params p;
  FeatureMapNode a(p), b(p);
  std::vector<at::Tensor> t = {at::randn({2, 64, 8, 8}), at::randn({2, 128, 4, 4}), at::randn({2, 256, 2, 2})};
  auto eval32 = a.forward(t);
  ASSERT_TRUE(b.set_precision(Precision::kBFloat16Mixed));
  a.train(true);
  b.train(true);
  auto o32 = a.forward(t), o16 = b.forward(t);
  for (size_t j = 0; j < 3; ++j) {
    EXPECT_EQ(o16[j].scalar_type(), at::kFloat);
    const double rel = (o16[j] - o32[j]).norm().item<double>() / o32[j].norm().item<double>();
    EXPECT_LT(rel, 2e-2) << "level " << j;
    EXPECT_GT(rel, 0.0) << "level " << j << ": bf16 had no effect";
  }
  (o16[0].sum() + o16[1].sum() + o16[2].sum()).backward();
  for (const auto& prm : b.parameters()) {
    ASSERT_TRUE(prm.grad().defined());
    EXPECT_EQ(prm.grad().scalar_type(), at::kFloat);
  }
  b.train(false);
  auto eval16 = b.forward(t);
  for (size_t j = 0; j < 3; ++j) EXPECT_TRUE(eval16[j].equal(eval32[j])) << "level " << j;
}

std::string TwoBackbones(const std::string& teacher, const std::string& student, const std::string& fm) {
  return R"({"schema": 1, "name": "t", "inputs": {"image": "Tensor"}, "outputs": {"ft": "FeaturePyramid"},
    "nodes": [
      {"id": "teacher", "type": "Backbone", "in": {"image": "image"}, "out": {"features": "t"}, "params": {)" +
         teacher + R"(}},
      {"id": "other", "type": "Backbone", "in": {"image": "image"}, "out": {"features": "s"}, "params": {)" +
         student + R"(}},
      {"id": "fm", "type": "FeatureMap", "in": {"teacher": "t", "student": "s"}, "out": {"teacher": "ft"},
       "params": {)" +
         fm + "}}]}";
}

TEST(FeatureMapNodeTest, LevelMismatchIsALoadError) {
  EXPECT_THAT([] { validate(parse_graph(TwoBackbones("", R"("layers": ["layer2", "layer3", "layer4"])", ""), "g.json")); },
              testing::ThrowsMessage<GraphError>(HasSubstr(
                  R"(g.json: node "fm" (FeatureMap): input "student": level 2 has 512 channels, input "teacher" has 256)")));
  EXPECT_THAT([] { validate(parse_graph(TwoBackbones("", R"("layers": ["layer1", "layer2"])", ""), "g.json")); },
              testing::ThrowsMessage<GraphError>(HasSubstr(R"(input "student": has 2 levels, input "teacher" has 3)")));
  EXPECT_THAT(
      [] { validate(parse_graph(TwoBackbones(R"("arch": "resnet50")", R"("arch": "resnet50")", ""), "g.json")); },
      testing::ThrowsMessage<GraphError>(HasSubstr(R"(input "teacher": level 2 has 1024 channels, param "channels" has 256)")));
  validate(
      parse_graph(TwoBackbones(R"("arch": "resnet50")", R"("arch": "resnet50")", R"("channels": [256, 512, 1024])"), "g.json"));
  EXPECT_THAT([] { NodeRunner r(R"({"id": "fm", "type": "FeatureMap", "params": {"hidden_ratio": 0}})"); },
              testing::ThrowsMessage<GraphError>(HasSubstr(R"(param "hidden_ratio": must be in [0.0625, 16], got 0)")));
}

TEST(FeatureMapNodeTest, RuntimeMismatchNamesTheLevel) {
  NodeRunner runner(R"({"id": "fm", "type": "FeatureMap", "params": {"channels": [4, 8]}})");
  runner.push(FeatureMapNode::kInTeacher, FeaturePyramid{{at::randn({1, 4, 2, 2}), at::randn({1, 8, 1, 1})}});
  runner.push(FeatureMapNode::kInStudent, FeaturePyramid{{at::randn({1, 4, 2, 2}), at::randn({1, 6, 1, 1})}});
  EXPECT_THAT([&] { runner.run(); },
              testing::ThrowsMessage<NodeError>(HasSubstr(R"(input "student": level 1 has 6 channels, input "teacher" has 8)")));
}

}  // namespace
}  // namespace fmam

namespace fmam {
namespace {

// init "identity": f(x) = x on non-negative features (what the post-ReLU teacher and student
// give), so stage 2 starts from the unmapped detector; gradients still reach every weight.
TEST(FeatureMapNodeTest, IdentityInitMapsNonNegativeFeaturesToThemselves) {
  for (float ratio : {1.0f, 1.5f}) {
    NodeRunner runner(R"({"id": "fm", "type": "FeatureMap", "params": {"init": "identity", "hidden_ratio": )" +
                      std::to_string(ratio) + "}}");
    const std::vector<at::Tensor> x = {at::rand({2, 64, 8, 8}), at::rand({2, 128, 4, 4}), at::rand({2, 256, 2, 2})};
    runner.push(FeatureMapNode::kInTeacher, FeaturePyramid{x});
    runner.push(FeatureMapNode::kInStudent, FeaturePyramid{x});
    runner.run();
    const auto out = runner.pop(FeatureMapNode::kOutTeacher).levels;
    for (size_t j = 0; j < 3; ++j) EXPECT_TRUE(at::allclose(out[j], x[j], 0, 1e-6)) << "ratio " << ratio << " level " << j;
  }
  FeatureMapNode::Params p;
  p.init = FeatureMapNode::Init::kIdentity;
  FeatureMapNode fm(p);
  fm.train(true);
  auto out = fm.forward({at::rand({1, 64, 4, 4}), at::rand({1, 128, 2, 2}), at::rand({1, 256, 1, 1})});
  (out[0].square().sum() + out[1].square().sum() + out[2].square().sum()).backward();
  for (const auto& prm : fm.parameters()) {
    ASSERT_TRUE(prm.grad().defined());
    EXPECT_GT(prm.grad().abs().sum().item<double>(), 0.0);
  }
  EXPECT_THAT([] { NodeRunner r(R"({"id": "fm", "type": "FeatureMap", "params": {"init": "identity", "hidden_ratio": 0.5}})"); },
              testing::ThrowsMessage<GraphError>(testing::HasSubstr(
                  R"(param "init": "identity" needs hidden_ratio >= 1 (the hidden layer must hold every channel), got 0.5)")));
}

}  // namespace
}  // namespace fmam

namespace fmam {
namespace {

// Two FeatureMap nodes of one graph, the second sharing the first's weights (param "share", as a
// training graph's synthetic branch uses it).
std::string SharingGraph(const std::string& syn_params) {
  return R"({"schema": 1, "inputs": {"t": "FeaturePyramid", "s": "FeaturePyramid"},
    "outputs": {"mt": "FeaturePyramid", "ms": "FeaturePyramid", "mt2": "FeaturePyramid", "ms2": "FeaturePyramid"},
    "nodes": [
      {"id": "fm", "type": "FeatureMap", "in": {"teacher": "t", "student": "s"}, "out": {"teacher": "mt", "student": "ms"},
       "params": {"channels": [4, 8], "hidden_ratio": 2, "seed": 3}},
      {"id": "fm_syn", "type": "FeatureMap", "in": {"teacher": "s", "student": "t"}, "out": {"teacher": "mt2", "student": "ms2"},
       "params": )" +
         syn_params + "}]}";
}

// The sharing node holds the very tensors of the shared one (so a training step on either moves
// both), maps like it, and takes its hidden width and seed rather than its own.
TEST(FeatureMapNodeTest, ShareUsesTheWeightsOfTheNodeNamed) {
  Executor ex(validate(parse_graph(SharingGraph(R"({"share": "fm", "channels": [4, 8]})"), "g.json")));
  auto& fm = dynamic_cast<FeatureMapNode&>(ex.node("fm"));
  auto& syn = dynamic_cast<FeatureMapNode&>(ex.node("fm_syn"));
  const auto a = fm.named_state(), b = syn.named_state();
  ASSERT_EQ(a.size(), b.size());
  for (size_t k = 0; k < a.size(); ++k) {
    EXPECT_EQ(a[k].first, b[k].first);
    EXPECT_TRUE(a[k].second.is_same(b[k].second)) << a[k].first;
  }
  EXPECT_EQ(a[0].second.size(0), 8) << "level 0 hidden width: the shared node's hidden_ratio 2";
  const FeaturePyramid t{{at::randn({1, 4, 3, 3}), at::randn({1, 8, 2, 2})}};
  const FeaturePyramid s{{at::randn({1, 4, 3, 3}), at::randn({1, 8, 2, 2})}};
  std::vector<FeaturePyramid> mt, ms, mt2, ms2;
  ex.run(
      [n = 0, &t, &s](Frame& f) mutable {
        if (n++ > 0) return false;
        f.set("t", Packet::make(t));
        f.set("s", Packet::make(s));
        return true;
      },
      [&](const Frame& f) {
        mt.push_back(f.get<FeaturePyramid>("mt"));
        ms.push_back(f.get<FeaturePyramid>("ms"));
        mt2.push_back(f.get<FeaturePyramid>("mt2"));
        ms2.push_back(f.get<FeaturePyramid>("ms2"));
      });
  ASSERT_EQ(mt.size(), 1u);
  for (size_t j = 0; j < 2; ++j) {
    EXPECT_TRUE(at::equal(mt2[0].levels[j], ms[0].levels[j])) << "f(s) from either node, level " << j;
    EXPECT_TRUE(at::equal(ms2[0].levels[j], mt[0].levels[j])) << "f(t) from either node, level " << j;
  }
}

TEST(FeatureMapNodeTest, ShareNamesAMissingNodeOrOtherChannels) {
  EXPECT_THAT([] { Executor ex(validate(parse_graph(SharingGraph(R"({"share": "nope", "channels": [4, 8]})"), "g.json"))); },
              testing::ThrowsMessage<Error>(
                  testing::AllOf(HasSubstr(R"(node "fm_syn" (FeatureMap))"),
                                 HasSubstr(R"(param "share": no FeatureMap "nope" is declared before this node)"))));
  EXPECT_THAT([] { Executor ex(validate(parse_graph(SharingGraph(R"({"share": "fm", "channels": [4, 16]})"), "g.json"))); },
              testing::ThrowsMessage<Error>(
                  HasSubstr(R"(node "fm_syn" (FeatureMap): param "share": FeatureMap "fm" has other channels than this node)")));
  EXPECT_THAT(
      [] {
        FeatureMapNode::Params p;
        p.share = "fm";
        FeatureMapNode n(p);
      },
      testing::ThrowsMessage<Error>(HasSubstr(R"(param "share" needs a graph)")));
}

}  // namespace
}  // namespace fmam
