// KDLoss (Eq. 1) against values worked out by hand on 2-channel vectors at known angles, the
// per-pixel vs flattened cosine convention, finite gradients at the singular points, batches, and
// the error messages.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cmath>

#include "framework/graph.h"
#include "framework/node_runner.h"
#include "nodes/kd_loss_node.h"

namespace fmam {
namespace {

using testing::HasSubstr;
using Distance = KDLossNode::Distance;

// A [1, C, 1, N] level: pixel i holds the channel vector v[i].
at::Tensor pixels(const std::vector<std::vector<float>>& v) {
  const int64_t n = int64_t(v.size()), c = int64_t(v[0].size());
  at::Tensor t = at::empty({1, c, 1, n});
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < c; ++k) t[0][k][0][i] = v[i][k];
  return t;
}

// The 2-vector of length r at `deg` degrees.
std::vector<float> polar(double deg, double r = 1.0) {
  const double a = deg * M_PI / 180.0;
  return {float(r * std::cos(a)), float(r * std::sin(a))};
}

KDLossNode::Params with(Distance d) {
  KDLossNode::Params p;
  p.distance = d;
  return p;
}

float loss_of(const std::vector<at::Tensor>& t, const std::vector<at::Tensor>& s, Distance d) {
  return KDLossNode::compute(t, s, with(d)).item<float>();
}

// Default "cos" through the node: per pixel 1 - cos, mean over pixels. Student vectors at 0, 45,
// 90 and 180 degrees from the teacher's (lengths differ: cos ignores them):
//   (0 + (1 - sqrt(2)/2) + 1 + 2) / 4 = 0.8232233
TEST(KDLossNodeTest, CosAtKnownAnglesThroughTheNode) {
  NodeRunner runner(R"({"id": "kd", "type": "KDLoss"})");
  const at::Tensor t = pixels({polar(0), polar(0, 2), polar(0), polar(0, 0.5)});
  const at::Tensor s = pixels({polar(0, 3), polar(45), polar(90, 0.25), polar(180, 4)});
  runner.push(KDLossNode::kTeacher, FeaturePyramid{{t}});
  runner.push(KDLossNode::kStudent, FeaturePyramid{{s}});
  runner.run();
  const at::Tensor out = runner.pop(KDLossNode::kLoss).t;
  ASSERT_EQ(out.sizes(), (at::IntArrayRef{1}));
  EXPECT_NEAR(out.item<float>(), (0 + (1 - std::sqrt(2.0) / 2) + 1 + 2) / 4, 1e-6);
}

// The convention that separates the two cosine losses: per pixel, every pixel counts the same;
// flattened (RD4AD's code), pixels count by their magnitude. Pixel 0: t = s = (10, 0); pixel 1:
// t = (1, 0), s = (0, 1).  cos: (0 + 1) / 2 = 0.5.  cos_flat: t = (10, 1, 0, 0) and
// s = (10, 0, 0, 1) as [c0p0, c0p1, c1p0, c1p1]; cos = 100 / 101, loss = 1/101.
TEST(KDLossNodeTest, CosFlatWeightsPixelsByMagnitude) {
  const std::vector<at::Tensor> t = {pixels({{10, 0}, {1, 0}})};
  const std::vector<at::Tensor> s = {pixels({{10, 0}, {0, 1}})};
  EXPECT_NEAR(loss_of(t, s, Distance::kCos), 0.5, 1e-6);
  EXPECT_NEAR(loss_of(t, s, Distance::kCosFlat), 1.0 / 101.0, 1e-6);
  // With equal magnitudes everywhere the two agree: t = (1,0),(1,0); s = (1,0),(0,1): both 0.5.
  const std::vector<at::Tensor> t1 = {pixels({{1, 0}, {1, 0}})};
  const std::vector<at::Tensor> s1 = {pixels({{1, 0}, {0, 1}})};
  EXPECT_NEAR(loss_of(t1, s1, Distance::kCos), 0.5, 1e-6);
  EXPECT_NEAR(loss_of(t1, s1, Distance::kCosFlat), 0.5, 1e-6);
  // One pixel: the same vector either way. 45 degrees: 1 - sqrt(2)/2.
  const std::vector<at::Tensor> a = {pixels({polar(0, 2)})}, b = {pixels({polar(45, 7)})};
  EXPECT_NEAR(loss_of(a, b, Distance::kCos), 1 - std::sqrt(2.0) / 2, 1e-6);
  EXPECT_NEAR(loss_of(a, b, Distance::kCosFlat), 1 - std::sqrt(2.0) / 2, 1e-6);
}

// l1 / l2 are means over channels and pixels: pixel 0 differs by (-2, 3), pixel 1 not at all.
//   l1 = (2 + 3 + 0 + 0) / 4 = 1.25;  l2 = (4 + 9 + 0 + 0) / 4 = 3.25
TEST(KDLossNodeTest, L1AndL2AreMeansOverChannelsAndPixels) {
  const std::vector<at::Tensor> t = {pixels({{1, 2}, {5, -5}})};
  const std::vector<at::Tensor> s = {pixels({{3, -1}, {5, -5}})};
  EXPECT_NEAR(loss_of(t, s, Distance::kL1), 1.25, 1e-6);
  EXPECT_NEAR(loss_of(t, s, Distance::kL2), 3.25, 1e-6);
}

// Eq. 1's 1/L: level 0 (2x2, every pixel at 90 degrees: 1) and level 1 (1x1, equal: 0) -> 0.5,
// whatever their sizes.
TEST(KDLossNodeTest, LevelsAreAveraged) {
  const at::Tensor t0 = at::zeros({1, 2, 2, 2}).index_fill_(1, at::tensor({int64_t(0)}), 1.0);
  const at::Tensor s0 = at::zeros({1, 2, 2, 2}).index_fill_(1, at::tensor({int64_t(1)}), 1.0);
  const at::Tensor t1 = at::full({1, 3, 1, 1}, 2.0);
  for (Distance d : {Distance::kCos, Distance::kCosFlat}) EXPECT_NEAR(loss_of({t0, t1}, {s0, t1.clone()}, d), 0.5, 1e-6);
  // l2: level 0 has (1^2 + 1^2) / 2 = 1 per pixel, level 1 0 -> 0.5.
  EXPECT_NEAR(loss_of({t0, t1}, {s0, t1.clone()}, Distance::kL2), 0.5, 1e-6);
}

// Batched through the runner (2 frames per call): one loss per frame, each its own.
TEST(KDLossNodeTest, BatchGivesOneLossPerFrame) {
  RunOptions o;
  o.batch = 2;
  NodeRunner runner(R"({"id": "kd", "type": "KDLoss", "params": {"distance": "cos"}})", o);
  const double expect[3] = {0.0, 1.0, 2.0};  // 0, 90, 180 degrees
  const double deg[3] = {0, 90, 180};
  for (int f = 0; f < 3; ++f) {
    runner.push(KDLossNode::kTeacher, FeaturePyramid{{pixels({polar(30)}), pixels({polar(0), polar(0)})}});
    runner.push(KDLossNode::kStudent, FeaturePyramid{{pixels({polar(30 + deg[f], 2)}), pixels({polar(deg[f]), polar(deg[f])})}});
  }
  runner.run();
  for (int f = 0; f < 3; ++f) {
    const at::Tensor out = runner.pop(KDLossNode::kLoss).t;
    ASSERT_EQ(out.numel(), 1);
    EXPECT_NEAR(out.item<float>(), expect[f], 1e-5) << "frame " << f;
  }
  // compute() on a stacked batch: shape [B].
  const at::Tensor t = at::randn({4, 8, 3, 5}), s = at::randn({4, 8, 3, 5});
  const at::Tensor l = KDLossNode::compute({t}, {s}, {});
  ASSERT_EQ(l.sizes(), (at::IntArrayRef{4}));
  EXPECT_NEAR(l[2].item<float>(), KDLossNode::compute({t.narrow(0, 2, 1)}, {s.narrow(0, 2, 1)}, {}).item<float>(), 1e-6);
}

// Backward at the singular points: identical vectors (cos = 1), opposite (cos = -1), zero teacher
// and zero student vectors. Every distance gives finite gradients.
TEST(KDLossNodeTest, GradientsAreFiniteAtSingularPoints) {
  const at::Tensor t = pixels({{1, 2}, {1, 2}, {0, 0}, {3, 1}, {0, 0}});
  const at::Tensor s0 = pixels({{1, 2}, {-1, -2}, {1, 1}, {0, 0}, {0, 0}});
  for (Distance d : {Distance::kCos, Distance::kCosFlat, Distance::kL1, Distance::kL2}) {
    at::Tensor tt = t.clone().requires_grad_(true), s = s0.clone().requires_grad_(true);
    const at::Tensor l = KDLossNode::compute({tt}, {s}, with(d));
    ASSERT_TRUE(at::isfinite(l).all().item<bool>()) << int(d);
    l.sum().backward();
    EXPECT_TRUE(at::isfinite(s.grad()).all().item<bool>()) << int(d);
    EXPECT_TRUE(at::isfinite(tt.grad()).all().item<bool>()) << int(d);
  }
  // cos: a zero vector has cos 0 with anything (loss 1 at that pixel); the others 0, 2, 1, 1.
  EXPECT_NEAR(loss_of({t}, {s0}, Distance::kCos), (0 + 2 + 1 + 1 + 1) / 5.0, 1e-6);
}

// The frozen teacher's features are inference tensors; the loss clones them so autograd can
// save what it needs, and gradients reach the student.
TEST(KDLossNodeTest, AcceptsInferenceTensorsFromTheTeacher) {
  at::Tensor t;
  {
    c10::InferenceMode guard;
    t = at::randn({2, 4, 3, 3});
  }
  ASSERT_TRUE(t.is_inference());
  for (Distance d : {Distance::kCos, Distance::kCosFlat, Distance::kL1, Distance::kL2}) {
    at::Tensor s = at::randn({2, 4, 3, 3}).requires_grad_(true);
    KDLossNode::compute({t}, {s}, with(d)).mean().backward();
    ASSERT_TRUE(s.grad().defined());
    EXPECT_GT(s.grad().abs().sum().item<float>(), 0.0f);
  }
}

TEST(KDLossNodeTest, LevelMismatchIsNamed) {
  const at::Tensor a = at::zeros({1, 2, 4, 4}), b = at::zeros({1, 2, 2, 2});
  EXPECT_THAT(
      [&] {
        KDLossNode::compute({a, b, b}, {a, b}, {});
      },
      testing::ThrowsMessage<PortError>(HasSubstr(R"(input "student": has 2 levels, input "teacher" has 3)")));
  EXPECT_THAT(
      [&] {
        KDLossNode::compute({a, b}, {a, at::zeros({1, 3, 2, 2})}, {});
      },
      testing::ThrowsMessage<PortError>(HasSubstr(R"(input "student": level 1 has 3 channels, input "teacher" has 2)")));
  EXPECT_THAT(
      [&] {
        KDLossNode::compute({a}, {at::zeros({1, 2, 4, 3})}, {});
      },
      testing::ThrowsMessage<PortError>(HasSubstr(R"(input "student": level 0 is 4x3 (HxW), input "teacher" is 4x4)")));
  EXPECT_THAT(
      [&] {
        KDLossNode::compute({a}, {at::zeros({2, 2, 4, 4})}, {});
      },
      testing::ThrowsMessage<PortError>(HasSubstr(R"(input "student": level 0 has batch 2, input "teacher" has 1)")));
  // Through the runner the node's message arrives inside the runner's context.
  NodeRunner runner(R"({"id": "kd", "type": "KDLoss"})");
  runner.push(KDLossNode::kTeacher, FeaturePyramid{{a, b}});
  runner.push(KDLossNode::kStudent, FeaturePyramid{{a, at::zeros({1, 5, 2, 2})}});
  EXPECT_THAT([&] { runner.run(); },
              testing::ThrowsMessage<Error>(HasSubstr(R"(input "student": level 1 has 5 channels, input "teacher" has 2)")));
}

// At load time, from the producers' shapes (G-API outMeta): the same message before any frame.
TEST(KDLossNodeTest, InferChecksLevelsAndGivesAScalarPerFrame) {
  Shapes in;
  in.set(KDLossNode::kTeacher, Shape::pyramid({{64, 64, 64}, {128, 32, 32}, {256, 16, 16}}));
  in.set(KDLossNode::kStudent, Shape::pyramid({{64, 64, 64}, {128, 32, 32}, {256, 16, 16}}));
  const Shapes out = KDLossNode::infer({}, in);
  EXPECT_TRUE(out.at(KDLossNode::kLoss).dims.empty());
  EXPECT_TRUE(out.at(KDLossNode::kLoss).known);
  in.set(KDLossNode::kStudent, Shape::pyramid({{64, 64, 64}, {512, 32, 32}, {256, 16, 16}}));
  EXPECT_THAT(
      [&] { KDLossNode::infer({}, in); },
      testing::ThrowsMessage<PortError>(HasSubstr(R"(input "student": level 1 has 512 channels, input "teacher" has 128)")));
  in.set(KDLossNode::kStudent, Shape::pyramid({{64, 64, 64}, {128, 32, 32}}));
  EXPECT_THAT([&] { KDLossNode::infer({}, in); }, testing::ThrowsMessage<PortError>(HasSubstr("has 2 levels")));
  in.set(KDLossNode::kStudent, Shape::unknown());
  EXPECT_NO_THROW(KDLossNode::infer({}, in));
}

TEST(KDLossNodeTest, BadParamsAreNamed) {
  EXPECT_THAT([] { NodeRunner r(R"({"id": "kd", "type": "KDLoss", "params": {"distance": "cosine"}})"); },
              testing::ThrowsMessage<GraphError>(
                  HasSubstr(R"(node "kd" (KDLoss): param "distance": must be one of: cos, cos_flat, l1, l2)")));
  EXPECT_THAT([] { NodeRunner r(R"({"id": "kd", "type": "KDLoss", "params": {"margin": 1}})"); },
              testing::ThrowsMessage<GraphError>(HasSubstr(R"(unknown param "margin")")));
}

}  // namespace
}  // namespace fmam
