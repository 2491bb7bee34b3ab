// Student: RD4AD's structure (state names, shapes, parameter counts) and forward values against
// RD4AD written in PyTorch by `/usr/bin/python3 tests/testdata/make_student_fixture.py` (Debian's
// torch 1.13.1; rerun it to regenerate tests/testdata/student_rd4ad_fixture.txt); the symmetric
// kind's names against torchvision's state dict; output shapes (square, non-square, odd sizes);
// seeded determinism; learned-state round trips and errors; training mode; load-time errors.
#include "nodes/student_node.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <map>
#include <sstream>

#include "framework/cpu_features.h"
#include "framework/graph.h"
#include "framework/node_runner.h"
#include "networks/weights.h"
#include "nodes/backbone_node.h"
#include "tests/reference/pyramid_fixture.h"

namespace fmam {
namespace {

using testing::AllOf;
using testing::HasSubstr;

const std::string kFixture = std::string(FMAM_SOURCE_DIR) + "/tests/testdata/student_rd4ad_fixture.txt";
const std::string kWeights = std::string(FMAM_SOURCE_DIR) + "/../shared/weights/resnet18_imagenet1k_v1_to_layer3.pth";

// A teacher-like pyramid (non-negative, as after ReLU) for an h x w image.
std::vector<at::Tensor> TeacherPyramid(Arch arch, int64_t h, int64_t w, int64_t batch = 1) {
  std::vector<at::Tensor> out;
  for (int l = 1; l <= 3; ++l) out.push_back(at::rand({batch, layer_channels(arch, l), layer_size(h, l), layer_size(w, l)}));
  return out;
}

std::vector<int64_t> Dims(const at::Tensor& t) { return t.sizes().vec(); }

StudentNode::Params ReverseParams(Arch arch = Arch::kResNet18, int seed = 0) {
  StudentNode::Params p;
  p.arch = arch;
  p.seed = seed;
  return p;
}

TEST(StudentNodeTest, ReverseOutputsHaveTheTeachersShapes) {
  // 256 x 256 (the paper's size), non-square, and sizes not divisible by 32 (decoder cropping).
  for (auto [h, w] : std::vector<std::pair<int64_t, int64_t>>{{256, 256}, {128, 192}, {200, 312}, {67, 93}}) {
    NodeRunner runner(R"({"id": "student", "type": "Student", "in": {"features": "t"},
                          "params": {"kind": "reverse", "arch": "resnet18"}})");
    const auto teacher = TeacherPyramid(Arch::kResNet18, h, w);
    runner.push(StudentNode::kFeatures, FeaturePyramid{teacher});
    runner.run();
    const auto out = runner.pop(StudentNode::kOut).levels;
    ASSERT_EQ(out.size(), 3u);
    for (size_t j = 0; j < 3; ++j) EXPECT_EQ(Dims(out[j]), Dims(teacher[j])) << h << "x" << w << " level " << j;
  }
}

TEST(StudentNodeTest, SymmetricOutputsHaveTheTeachersShapes) {
  for (auto [h, w] : std::vector<std::pair<int64_t, int64_t>>{{256, 256}, {96, 160}, {67, 93}}) {
    NodeRunner runner(R"({"id": "student", "type": "Student", "in": {"image": "img"},
                          "params": {"kind": "symmetric", "layers": ["layer1", "layer2", "layer3"]}})");
    runner.push(StudentNode::kImage, Tensor{at::randn({1, 3, h, w})});
    runner.run();
    const auto out = runner.pop(StudentNode::kOut).levels;
    const auto dims = pyramid_dims(Arch::kResNet18, {1, 2, 3}, h, w);
    ASSERT_EQ(out.size(), 3u);
    for (size_t j = 0; j < 3; ++j) {
      EXPECT_EQ(Dims(out[j]), (std::vector<int64_t>{1, dims[j][0], dims[j][1], dims[j][2]})) << h << "x" << w;
    }
  }
  StudentNode::Params p;
  p.kind = StudentNode::Kind::kSymmetric;
  p.layers = {"layer2", "layer3"};
  EXPECT_EQ(StudentNode::infer(p, Shapes{{"image", Shape::of({3, 256, 256})}}).at("features").levels,
            (std::vector<std::vector<int64_t>>{{128, 32, 32}, {256, 16, 16}}));
}

TEST(StudentNodeTest, SameSeedSameWeightsDifferentSeedDifferentWeights) {
  StudentNode a(ReverseParams(Arch::kResNet18, 3)), b(ReverseParams(Arch::kResNet18, 3)), c(ReverseParams(Arch::kResNet18, 4));
  const auto sa = a.named_state(), sb = b.named_state(), sc = c.named_state();
  ASSERT_EQ(sa.size(), sb.size());
  bool any_differs = false;
  for (size_t i = 0; i < sa.size(); ++i) {
    EXPECT_EQ(sa[i].first, sb[i].first);
    EXPECT_TRUE(at::equal(sa[i].second, sb[i].second)) << sa[i].first;
    if (sa[i].second.dim() == 4) any_differs = any_differs || !at::equal(sa[i].second, sc[i].second);
  }
  EXPECT_TRUE(any_differs);
  const auto teacher = TeacherPyramid(Arch::kResNet18, 64, 64);
  const auto oa = a.forward(teacher), ob = b.forward(teacher);
  for (size_t j = 0; j < 3; ++j) EXPECT_TRUE(at::equal(oa[j], ob[j]));
  // The symmetric kind too.
  StudentNode::Params p;
  p.kind = StudentNode::Kind::kSymmetric;
  p.seed = 11;
  StudentNode s1(p), s2(p);
  const at::Tensor img = at::randn({1, 3, 32, 48});
  const auto o1 = s1.forward({img}), o2 = s2.forward({img});
  for (size_t j = 0; j < 3; ++j) EXPECT_TRUE(at::equal(o1[j], o2[j]));
}

TEST(StudentNodeTest, Rd4adParameterCountsMatchPython) {
  // "count <arch> <without bn.conv4/bn4> <RD4AD's total>" (RD4AD's conv4/bn4 are never used).
  const auto counts = reference::FixtureLines(kFixture, "count");
  ASSERT_EQ(counts.size(), 4u);
  for (const auto& line : counts) {
    std::istringstream in(line);
    std::string name;
    int64_t used = 0, total = 0;
    in >> name >> used >> total;
    Arch arch = Arch::kResNet18;
    for (const auto& [n, a] : arch_choices().items)
      if (n == name) arch = a;
    StudentNode node(ReverseParams(arch));
    EXPECT_EQ(node.network().parameter_count(), used) << name;
  }
  EXPECT_EQ(StudentNode(ReverseParams()).network().parameter_count(),
            15383168);  // resnet18: 15.4 M
}

// The initial weights come from fmam's own generator, so they differ from the official ones;
// their distributions must not (kaiming fan_out for Conv2d, PyTorch's default for the transposed
// convs, BatchNorm 1/0). rd4ad_init_fixture.txt: the official student's statistics, made by
// make_rd4ad_init_fixture.py. A wrong fan, scheme or layer shows as a std off by 10% or more.
TEST(StudentNodeTest, Rd4adInitialWeightsAreDistributedAsTheOfficialOnes) {
  std::ifstream f(std::string(FMAM_SOURCE_DIR) + "/tests/testdata/rd4ad_init_fixture.txt");
  ASSERT_TRUE(f) << "rd4ad_init_fixture.txt";
  std::map<std::string, at::Tensor> mine;
  for (const auto& [name, t] : StudentNode(ReverseParams()).named_state()) mine[name] = t.to(at::kDouble);
  std::string line;
  int checked = 0;
  while (std::getline(f, line)) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream in(line);
    std::string name;
    int64_t numel = 0;
    double mean = 0, std_ = 0;
    in >> name >> numel >> mean >> std_;
    ASSERT_TRUE(mine.count(name)) << name;
    const at::Tensor& t = mine[name];
    ASSERT_EQ(t.numel(), numel) << name;
    const double m = t.mean().item<double>(), s = numel > 1 ? t.std().item<double>() : 0.0;
    if (std_ == 0) {
      EXPECT_EQ(s, 0.0) << name;
      EXPECT_EQ(m, mean) << name;
      continue;
    }
    // Sampling error of a std estimate is ~std / sqrt(2n): 1% is > 10 sigma for n >= 4096.
    EXPECT_NEAR(s / std_, 1.0, numel >= 4096 ? 0.01 : 0.1) << name;
    EXPECT_NEAR(m, 0.0, 6 * std_ / std::sqrt(double(numel))) << name;
    ++checked;
  }
  EXPECT_GE(checked, 20);
}

TEST(StudentNodeTest, Rd4adStateNamesAndShapesMatchPython) {
  // Python's state_dict() order, so RD4AD checkpoints ({'bn': ..., 'decoder': ...}) map 1:1.
  const auto expected = reference::FixtureLines(kFixture, "state");
  StudentNode node(ReverseParams());
  const auto state = node.named_state();
  ASSERT_EQ(state.size(), expected.size());
  for (size_t i = 0; i < state.size(); ++i) {
    std::string shape;
    for (int64_t d : state[i].second.sizes()) shape += (shape.empty() ? "" : "x") + std::to_string(d);
    EXPECT_EQ(state[i].first + " " + (shape.empty() ? "scalar" : shape), expected[i]) << i;
  }
}

// make_student_fixture.py's formula_state / formula_input, in double then float32.
at::Tensor FormulaTensor(const std::string& name, at::IntArrayRef shape, int k) {
  at::Tensor t = at::empty(shape, at::kDouble);
  double* p = t.data_ptr<double>();
  const int64_t n = t.numel();
  const bool bn_gamma = shape.size() == 1 && name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0;
  for (int64_t i = 0; i < n; ++i) {
    const double s = std::sin(0.37 * double(i) + 1.3 * k);
    double v;
    if (name.find("num_batches_tracked") != std::string::npos)
      v = 0;
    else if (name.find("running_var") != std::string::npos)
      v = 1.0 + 0.25 * (1.0 + s);
    else if (bn_gamma)
      v = 1.0 + 0.1 * s;
    else if (shape.size() == 4)
      v = s * std::sqrt(1.0 / double(n / shape[0]));
    else
      v = 0.1 * s;
    p[i] = v;
  }
  return t.to(at::kFloat);
}

at::Tensor FormulaInput(int64_t c, int64_t h, int64_t w, int j) {
  at::Tensor t = at::empty({1, c, h, w}, at::kDouble);
  double* p = t.data_ptr<double>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = 0.5 * (1.0 + std::sin(0.1 * double(i) + j));
  return t.to(at::kFloat);
}

TEST(StudentNodeTest, Rd4adForwardMatchesPython) {
  const auto runs = reference::ReadPyramidFixture(kFixture);
  ASSERT_EQ(runs.size(), 1u);
  StudentNode node(ReverseParams());
  std::map<std::string, at::Tensor> state;
  int k = 0;
  for (const auto& [name, t] : node.named_state()) {
    at::Tensor v = FormulaTensor(name, t.sizes(), k++);
    state[name] = t.scalar_type() == at::kLong ? v.to(at::kLong) : v;
  }
  node.load_state(state);
  const int64_t h = runs[0].height / 4, w = runs[0].width / 4;
  const auto out =
      node.forward({FormulaInput(64, h, w, 0), FormulaInput(128, h / 2, w / 2, 1), FormulaInput(256, h / 4, w / 4, 2)});
  reference::ExpectPyramidMatches(out, runs[0], 1e-5, 1e-4);
}

TEST(StudentNodeTest, SymmetricStateMatchesTorchvisionNames) {
  // The symmetric student up to layer3 has exactly the keys and shapes of torchvision's resnet18
  // conv1..layer3, so the shared teacher file loads into it.
  StudentNode::Params p;
  p.kind = StudentNode::Kind::kSymmetric;
  StudentNode node(p);
  const TensorMap tv = read_state_dict(kWeights);
  std::map<std::string, std::vector<int64_t>> mine, theirs;
  for (const auto& [name, t] : node.named_state()) mine[name] = t.sizes().vec();
  for (const auto& [name, t] : tv) theirs[name] = t.sizes().vec();
  EXPECT_EQ(mine, theirs);
  node.load_state(tv);  // and it loads
}

TEST(StudentNodeTest, LoadStateRoundTripsAndNamesItsProblems) {
  StudentNode a(ReverseParams(Arch::kResNet18, 1)), b(ReverseParams(Arch::kResNet18, 2));
  std::map<std::string, at::Tensor> state;
  for (const auto& [name, t] : a.named_state()) state[name] = t.clone();
  b.load_state(state);
  const auto teacher = TeacherPyramid(Arch::kResNet18, 64, 96);
  const auto oa = a.forward(teacher), ob = b.forward(teacher);
  for (size_t j = 0; j < 3; ++j) EXPECT_TRUE(at::equal(oa[j], ob[j]));

  state.erase("decoder.layer1.0.conv1.weight");
  state["bn.conv1.weight"] = at::zeros({1});
  state["bn.conv4.weight"] = at::zeros({1});
  EXPECT_THAT([&] { b.load_state(state); },
              testing::ThrowsMessage<Error>(AllOf(HasSubstr("missing (1): decoder.layer1.0.conv1.weight"),
                                                  HasSubstr("mis-shaped (1): bn.conv1.weight [1] (expected [128, 64, 3, 3])"),
                                                  HasSubstr("unexpected (1): bn.conv4.weight"))));
}

TEST(StudentNodeTest, TrainingModeTracksGradientsEvalModeDoesNot) {
  StudentNode node(ReverseParams());
  std::vector<at::Tensor> teacher;
  {
    c10::InferenceMode guard;  // as the Backbone produces them
    teacher = TeacherPyramid(Arch::kResNet18, 64, 64, 2);
  }
  node.train(true);
  EXPECT_TRUE(node.is_training());
  const at::Tensor mean_before = node.named_state()[3].second.clone();  // bn.bn_layer.0.bn1.running_mean
  auto out = node.forward(teacher);
  ASSERT_TRUE(out[0].requires_grad());
  (out[0].mean() + out[1].mean() + out[2].mean()).backward();
  int with_grad = 0;
  for (const auto& p : node.parameters()) with_grad += p.grad().defined();
  EXPECT_EQ(with_grad, int(node.parameters().size()));
  EXPECT_FALSE(at::equal(node.named_state()[3].second, mean_before)) << "BatchNorm running stats not updated";
  node.train(false);
  out = node.forward(teacher);
  EXPECT_FALSE(out[0].requires_grad());
}

// bf16-mixed training (Trainable::set_precision): outputs and gradients stay float32 and close
// to the float32 ones (bfloat16 keeps 8 bits of mantissa; through the ~20 layers of a randomly
// initialised RD4AD student that leaves 2-3 % relative difference in the outputs and a gradient
// direction within cos 0.96 of float32's); eval mode ignores the setting and is bit-identical.
TEST(StudentNodeTest, Bf16MixedTrainingKeepsFloat32OutputsAndGradients) {
  if (!cpu_has_bf16_kernels())
    GTEST_SKIP() << "oneDNN has no bfloat16 kernels for this CPU (no AVX-512): PyTorch's fallback sums in bfloat16";
  std::vector<at::Tensor> teacher = TeacherPyramid(Arch::kResNet18, 64, 64, 2);
  auto step = [&](Precision prec, std::vector<at::Tensor>* grads) {
    StudentNode node(ReverseParams());
    EXPECT_TRUE(node.set_precision(prec));
    auto eval = node.forward(teacher);  // eval mode, before training moves the BatchNorm stats
    node.train(true);
    auto out = node.forward(teacher);
    (out[0].mean() + out[1].pow(2).mean() + out[2].abs().mean()).backward();
    for (const auto& p : node.parameters()) grads->push_back(p.grad().clone());
    for (auto& t : out) t = t.detach();
    out.insert(out.end(), eval.begin(), eval.end());
    return out;
  };
  std::vector<at::Tensor> g32, g16;
  auto o32 = step(Precision::kFloat32, &g32);
  auto o16 = step(Precision::kBFloat16Mixed, &g16);
  for (size_t j = 0; j < 3; ++j) {
    EXPECT_EQ(o16[j].scalar_type(), at::kFloat) << "level " << j;
    const double rel = (o16[j] - o32[j]).norm().item<double>() / o32[j].norm().item<double>();
    EXPECT_LT(rel, 5e-2) << "level " << j;
    EXPECT_GT(rel, 0.0) << "level " << j << ": bf16 had no effect";
    EXPECT_TRUE(o16[3 + j].equal(o32[3 + j])) << "eval mode must stay float32, level " << j;
  }
  ASSERT_EQ(g16.size(), g32.size());
  double dot = 0, n16 = 0, n32 = 0;
  for (size_t i = 0; i < g16.size(); ++i) {
    ASSERT_EQ(g16[i].scalar_type(), at::kFloat);
    ASSERT_TRUE(at::isfinite(g16[i]).all().item<bool>()) << "parameter " << i;
    dot += (g16[i] * g32[i]).sum().item<double>();
    n16 += g16[i].pow(2).sum().item<double>();
    n32 += g32[i].pow(2).sum().item<double>();
  }
  EXPECT_GT(dot / std::sqrt(n16 * n32), 0.93) << "bf16 gradients point elsewhere";
}

std::string TeacherStudentGraph(const std::string& teacher_arch, const std::string& student) {
  return R"({"schema": 1, "name": "t", "inputs": {"image": "Tensor"}, "outputs": {"s": "FeaturePyramid"},
    "nodes": [
      {"id": "teacher", "type": "Backbone", "in": {"image": "image"}, "out": {"features": "t"},
       "params": {"arch": ")" +
         teacher_arch + R"("}},
      {"id": "student", "type": "Student", )" +
         student + R"(, "out": {"features": "s"}}]})";
}

TEST(StudentNodeTest, TeacherOfAnotherArchIsALoadError) {
  EXPECT_THAT(
      [] {
        validate(
            parse_graph(TeacherStudentGraph("resnet50", R"("in": {"features": "t"}, "params": {"arch": "resnet18"})"), "g.json"));
      },
      testing::ThrowsMessage<GraphError>(HasSubstr(
          R"(g.json: node "student" (Student): input "features": level 2 has 1024 channels, a resnet18 student expects 256)")));
  // The matching arch validates.
  validate(parse_graph(TeacherStudentGraph("resnet50", R"("in": {"features": "t"}, "params": {"arch": "resnet50"})"), "g.json"));
}

TEST(StudentNodeTest, EachKindNeedsItsInput) {
  EXPECT_THAT(
      [] {
        validate(
            parse_graph(TeacherStudentGraph("resnet18", R"("in": {"image": "image"}, "params": {"kind": "reverse"})"), "g.json"));
      },
      testing::ThrowsMessage<GraphError>(
          HasSubstr(R"(node "student" (Student): input "features": is not connected; kind "reverse" reads it)")));
  EXPECT_THAT(
      [] {
        validate(parse_graph(
            TeacherStudentGraph("resnet18", R"("in": {"image": "image", "features": "t"}, "params": {"kind": "symmetric"})"),
            "g.json"));
      },
      testing::ThrowsMessage<GraphError>(
          HasSubstr(R"(input "features": is connected, but kind "symmetric" reads input "image" only)")));
  EXPECT_THAT(
      [] {
        validate(parse_graph(
            TeacherStudentGraph("resnet18", R"("in": {"features": "t"}, "params": {"layers": ["layer2", "layer3"]})"), "g.json"));
      },
      testing::ThrowsMessage<GraphError>(
          HasSubstr(R"(param "layers": kind "reverse" (RD4AD) fuses exactly layer1, layer2, layer3)")));
}

TEST(StudentNodeTest, RuntimeChannelMismatchNamesTheLevel) {
  // Through NodeRunner the input shapes are unknown at load: the same check runs per frame.
  NodeRunner runner(R"({"id": "student", "type": "Student", "in": {"features": "t"}})");
  runner.push(StudentNode::kFeatures, FeaturePyramid{TeacherPyramid(Arch::kResNet50, 64, 64)});
  EXPECT_THAT([&] { runner.run(); }, testing::ThrowsMessage<NodeError>(HasSubstr(
                                         R"(input "features": level 2 has 1024 channels, a resnet18 student expects 256)")));
}

}  // namespace
}  // namespace fmam

namespace fmam {
namespace {

// update_bn_stats false: in training, BatchNorm normalises by the running statistics and leaves
// them alone (the synthetic twin must not shift what inference uses), gradients still flow, and
// the module is back in training mode afterwards.
TEST(StudentNodeTest, FrozenBatchNormStatsInTrainingAreUsedNotUpdated) {
  StudentNode::Params p = ReverseParams();
  p.update_bn_stats = false;
  StudentNode node(p);
  const auto teacher = TeacherPyramid(Arch::kResNet18, 64, 64);
  auto running = [&] {
    std::vector<at::Tensor> v;
    for (const auto& [k, t] : node.named_state())
      if (k.find("running_") != std::string::npos) v.push_back(t.clone());
    return v;
  };
  // Some non-trivial statistics first, so "normalised by them" is not the identity.
  {
    StudentNode::Params q = ReverseParams();
    StudentNode updater(q);
    updater.set_training(true);
    updater.forward(teacher);
    std::map<std::string, at::Tensor> state;
    for (const auto& [k, t] : updater.named_state()) state[k] = t;
    node.load_state(state);
  }
  const auto before = running();
  const auto eval_out = node.forward(teacher);  // eval mode (the default)
  node.set_training(true);
  auto out = node.forward(teacher);
  ASSERT_TRUE(out[0].requires_grad());
  (out[0].sum() + out[1].sum() + out[2].sum()).backward();
  const auto after = running();
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(before[i].equal(after[i])) << "running stat " << i << " changed";
  for (size_t j = 0; j < 3; ++j) EXPECT_TRUE(at::allclose(out[j].detach(), eval_out[j], 1e-4, 1e-5)) << "level " << j;
  bool grads = true;
  for (const auto& prm : node.parameters()) grads &= prm.grad().defined();
  EXPECT_TRUE(grads);
  EXPECT_TRUE(node.network().is_training());
  // The default updates them.
  StudentNode updating(ReverseParams());
  updating.set_training(true);
  const auto before2 = [&] {
    std::vector<at::Tensor> v;
    for (const auto& [k, t] : updating.named_state())
      if (k.find("running_mean") != std::string::npos) v.push_back(t.clone());
    return v;
  }();
  updating.forward(teacher);
  bool changed = false;
  size_t i = 0;
  for (const auto& [k, t] : updating.named_state())
    if (k.find("running_mean") != std::string::npos) changed |= !t.equal(before2[i++]);
  EXPECT_TRUE(changed);
}

}  // namespace
}  // namespace fmam
