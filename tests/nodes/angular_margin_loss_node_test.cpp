// AngularMarginLoss (Eq. 4-7) against values from trigonometry on 2-channel vectors at known
// angles, the margin's effect (Table 5), the mask / all regions and the mask pooling, Table 3's
// L1ML / L2ML variants, finite gradients at the singular points, and the error messages.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <cmath>
#include <functional>

#include "framework/graph.h"
#include "framework/node_runner.h"
#include "nodes/angular_margin_loss_node.h"

namespace fmam {
namespace {

using testing::HasSubstr;
using Node = AngularMarginLossNode;
using Params = AngularMarginLossNode::Params;

constexpr double kDeg = M_PI / 180.0;
// theta_p where the vectors are parallel: cos theta_p is clamped to 1 - eps (eps = 1e-6, the
// default), and that bound is a float32, as the features are.
const double kThetaEps = std::acos(double(float(1.0 - double(1e-6f))));

// The 2-vector of length r at `deg` degrees.
std::vector<float> polar(double deg, double r = 1.0) {
  return {float(r * std::cos(deg * kDeg)), float(r * std::sin(deg * kDeg))};
}

// A [B, C, H, W] level from per-frame, per-cell vectors: v[b][y * w + x].
at::Tensor level(const std::vector<std::vector<std::vector<float>>>& v, int64_t h, int64_t w) {
  const int64_t b = int64_t(v.size()), c = int64_t(v[0][0].size());
  at::Tensor t = at::empty({b, c, h, w});
  for (int64_t i = 0; i < b; ++i)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x)
        for (int64_t k = 0; k < c; ++k) t[i][k][y][x] = v[i][y * w + x][k];
  return t;
}

// A batch of 1x1 levels: frame i holds vector v[i].
at::Tensor frames(const std::vector<std::vector<float>>& v) {
  std::vector<std::vector<std::vector<float>>> f;
  for (const auto& x : v) f.push_back({x});
  return level(f, 1, 1);
}

Params all_region(float margin = 15.0f) {
  Params p;
  p.region = Node::Region::kAll;
  p.margin = margin;
  return p;
}

at::Tensor aml(const at::Tensor& t, const at::Tensor& s_syn, const at::Tensor& t_syn, const Params& p,
               const at::Tensor& mask = {}) {
  return Node::compute({t}, {s_syn}, {t_syn}, mask, p);
}

// One feature vector per frame; the teacher's f(m_t(I)) is at 0 degrees, the student's
// f(m_s(I')) at alpha = theta_p, the teacher's f(m_t(I')) at beta = theta_n (lengths vary: only
// angles count). D_AML = max(0, cos(beta) - cos(alpha + 15 deg)):
//   alpha  beta
//     45    45   cos 45 - cos 60              = 0.2071068
//     90    90   0 - cos 105                  = 0.2588190
//      0    90   0 - cos 15 < 0               -> 0   (margin met)
//     90   180   -1 - cos 105 < 0             -> 0
//      0     0   1 - cos(15 deg + acos(1 - eps)): an untouched pixel; the clamp leaves
//                theta_p = acos(1 - 1e-6) = 0.00141 rad, not 0
//    180     0   1 - cos(pi) = 2: theta_p + theta_m is capped at pi (uncapped: 1 - cos 195 = 1.966)
TEST(AngularMarginLossNodeTest, MatchesTrigonometryAtKnownAngles) {
  const double alpha[] = {45, 90, 0, 90, 0, 180};
  const double beta[] = {45, 90, 90, 180, 0, 0};
  const double expect[] = {
      std::cos(45 * kDeg) - std::cos(60 * kDeg), -std::cos(105 * kDeg), 0.0, 0.0, 1 - std::cos(15 * kDeg + kThetaEps), 2.0};
  std::vector<std::vector<float>> t, s, ts;
  for (int i = 0; i < 6; ++i) {
    t.push_back(polar(0, 1 + i));
    s.push_back(polar(alpha[i], 0.5 + i));
    ts.push_back(polar(beta[i], 2.0));
  }
  const at::Tensor l = aml(frames(t), frames(s), frames(ts), all_region());
  ASSERT_EQ(l.sizes(), (at::IntArrayRef{6}));
  for (int i = 0; i < 6; ++i) EXPECT_NEAR(l[i].item<float>(), expect[i], 2e-6) << "alpha " << alpha[i] << " beta " << beta[i];
}

// Table 5's margins: a larger theta_m asks for more, so the loss never falls as it grows; on
// random features (theta_p, theta_n near 90 degrees) it strictly rises. 180 degrees caps every
// cell at theta_p + theta_m = pi: loss = mean(cos theta_n + 1).
TEST(AngularMarginLossNodeTest, LargerMarginNeverLowersTheLoss) {
  at::manual_seed(3);
  const at::Tensor t = at::randn({3, 8, 4, 4}), s = at::randn({3, 8, 4, 4}), ts = at::randn({3, 8, 4, 4});
  at::Tensor prev;
  for (float m : {0.f, 5.f, 15.f, 30.f, 60.f, 90.f, 180.f}) {
    const at::Tensor l = aml(t, s, ts, all_region(m));
    if (prev.defined()) {
      EXPECT_TRUE((l >= prev).all().item<bool>()) << "margin " << m;
    }
    prev = l;
  }
  const at::Tensor l0 = aml(t, s, ts, all_region(0)), l15 = aml(t, s, ts, all_region(15)), l90 = aml(t, s, ts, all_region(90));
  EXPECT_TRUE((l0 < l15).all().item<bool>());
  EXPECT_TRUE((l15 < l90).all().item<bool>());
  const at::Tensor cos_n = (t * ts).sum(1) / (t.norm(2, {1}) * ts.norm(2, {1}));
  EXPECT_TRUE(at::allclose(aml(t, s, ts, all_region(180)), (cos_n + 1).mean({1, 2}), 1e-5, 1e-6));
}

// Two configurations of a cell: "A" (alpha = beta = 45: 0.2071068) and "B" (alpha = beta = 0:
// 0.0341) -- B is what an untouched pixel looks like. Level 0 is 4x4 (2x2 pixels a cell), level
// 1 2x2 (4x4 pixels a cell); the 8x8 mask covers the top-left 4x4 pixels, i.e. exactly the A
// cells. region mask -> A on both levels; region all -> level 0 (4A + 12B)/16, level 1 (A + 3B)/4.
constexpr double kA = 0.70710678118654752 - 0.5;
const double kB = 1 - std::cos(15 * kDeg + kThetaEps);

struct Scene {
  at::Tensor t0, s0, ts0, t1, s1, ts1;
};
// Cells for which is_a(y, x, w) hold configuration A, the rest B.
Scene make_scene(const std::function<bool(int, int, int)>& is_a, int h0 = 4, int h1 = 2) {
  // f_s(I') and f_t(I') alike: at 45 degrees in A cells, at 0 in B cells.
  auto build = [&](int h) {
    std::vector<std::vector<float>> cells;
    for (int y = 0; y < h; ++y)
      for (int x = 0; x < h; ++x) cells.push_back(polar(is_a(y, x, h) ? 45 : 0, 1.5));
    return level({cells}, h, h);
  };
  auto ones = [&](int h) {
    std::vector<std::vector<float>> cells(size_t(h * h), polar(0, 2.0));
    return level({cells}, h, h);
  };
  return {ones(h0), build(h0), build(h0), ones(h1), build(h1), build(h1)};
}

at::Tensor mask_box(int size, int h, int w) {
  at::Tensor m = at::zeros({1, 1, size, size});
  m.narrow(2, 0, h).narrow(3, 0, w).fill_(1.0);
  return m;
}

TEST(AngularMarginLossNodeTest, RegionMaskAveragesOverDefectCellsOnly) {
  // A where the cell lies in the top-left half of its level.
  const Scene sc = make_scene([](int y, int x, int h) { return y < h / 2 && x < h / 2; });
  const at::Tensor mask = mask_box(8, 4, 4);
  Params p;  // defaults: region mask, threshold pooling, margin 15
  const at::Tensor lm = Node::compute({sc.t0, sc.t1}, {sc.s0, sc.s1}, {sc.ts0, sc.ts1}, mask, p);
  EXPECT_NEAR(lm.item<float>(), kA, 2e-6);
  const at::Tensor la = Node::compute({sc.t0, sc.t1}, {sc.s0, sc.s1}, {sc.ts0, sc.ts1}, mask, all_region());
  EXPECT_NEAR(la.item<float>(), ((4 * kA + 12 * kB) / 16 + (kA + 3 * kB) / 4) / 2, 2e-6);
}

// A 3x3-pixel defect on a 4x4 level of 2x2-pixel cells covers cell (0,0) fully, (0,1) and (1,0)
// half, (1,1) a quarter; A at (0,0), B elsewhere. threshold (> 0.5): only (0,0) -> A;
// coverage: (1 A + 0.5 B + 0.5 B + 0.25 B) / 2.25.
TEST(AngularMarginLossNodeTest, MaskPoolingThresholdVersusCoverage) {
  const Scene sc = make_scene([](int y, int x, int) { return y == 0 && x == 0; });
  const at::Tensor mask = mask_box(8, 3, 3);
  Params p;
  EXPECT_NEAR(aml(sc.t0, sc.s0, sc.ts0, p, mask).item<float>(), kA, 2e-6);
  p.mask_pooling = Node::MaskPooling::kCoverage;
  EXPECT_NEAR(aml(sc.t0, sc.s0, sc.ts0, p, mask).item<float>(), (kA + 1.25 * kB) / 2.25, 2e-6);
  // The mask need not be 0/1 floats: 0/255 bytes mean the same.
  p.mask_pooling = Node::MaskPooling::kThreshold;
  EXPECT_NEAR(aml(sc.t0, sc.s0, sc.ts0, p, (mask * 255).to(at::kByte)).item<float>(), kA, 2e-6);
}

// A frame whose synthesis changed nothing (empty mask) adds exactly 0, with no NaN in the loss
// or the gradients, next to a frame with a defect.
TEST(AngularMarginLossNodeTest, EmptyMaskGivesZeroAndNoNaN) {
  at::manual_seed(5);
  at::Tensor t = at::randn({2, 4, 4, 4}).requires_grad_(true);
  at::Tensor s = at::randn({2, 4, 4, 4}).requires_grad_(true);
  at::Tensor ts = at::randn({2, 4, 4, 4}).requires_grad_(true);
  at::Tensor mask = at::zeros({2, 1, 16, 16});
  mask[1].narrow(1, 0, 8).fill_(1.0);
  const at::Tensor l = aml(t, s, ts, Params(), mask);
  EXPECT_EQ(l[0].item<float>(), 0.0f);
  EXPECT_GT(l[1].item<float>(), 0.0f);
  l.sum().backward();
  for (const at::Tensor& x : {t, s, ts}) {
    EXPECT_TRUE(at::isfinite(x.grad()).all().item<bool>());
    EXPECT_EQ(x.grad()[0].abs().sum().item<float>(), 0.0f);
  }
  // A single frame with nothing in its mask.
  EXPECT_EQ(aml(t.detach()[0].unsqueeze(0), s.detach()[0].unsqueeze(0), ts.detach()[0].unsqueeze(0), Params(),
                at::zeros({1, 1, 16, 16}))
                .item<float>(),
            0.0f);
}

// Table 3's variants, with l_margin 1: f_t = (0, 0), f_s' = (3, 4), f_t' = (1, 1).
//   l2: max(0, 5 + 1 - sqrt(2)) = 4.5857864    l1: max(0, 7 + 1 - 2) = 6
// Student right, teacher far (f_s' = f_t, f_t' = (3, 4)): l2 max(0, 0 + 1 - 5) = 0, l1 0.
TEST(AngularMarginLossNodeTest, L1AndL2MarginVariants) {
  const at::Tensor t = frames({{0, 0}, {2, -1}});
  const at::Tensor s = frames({{3, 4}, {2, -1}});
  const at::Tensor ts = frames({{1, 1}, {5, 3}});
  Params p = all_region();
  p.distance = Node::Distance::kL2;
  at::Tensor l = aml(t, s, ts, p);
  EXPECT_NEAR(l[0].item<float>(), 6 - std::sqrt(2.0), 1e-6);
  EXPECT_EQ(l[1].item<float>(), 0.0f);
  p.distance = Node::Distance::kL1;
  l = aml(t, s, ts, p);
  EXPECT_NEAR(l[0].item<float>(), 6.0, 1e-6);
  EXPECT_EQ(l[1].item<float>(), 0.0f);
  p.l_margin = 10;  // 0 + 10 - 7 = 3
  EXPECT_NEAR(aml(t, s, ts, p)[1].item<float>(), 3.0, 1e-6);
}

// positive "none" (the ablation without theta_p): the hinge is max(0, cos theta_n - cos theta_m)
// (l1 / l2: max(0, l_margin - d_n)) whatever the student's twin holds, which gets no gradient.
//   beta = theta_n:  0 -> 1 - cos 15;  10 -> cos 10 - cos 15;  15, 90 -> 0 (margin met)
TEST(AngularMarginLossNodeTest, PositiveNoneDropsThetaP) {
  const double beta[] = {0, 10, 15, 90};
  const double expect[] = {1 - std::cos(15 * kDeg), std::cos(10 * kDeg) - std::cos(15 * kDeg), 0.0, 0.0};
  std::vector<std::vector<float>> t, ts;
  for (double b : beta) {
    t.push_back(polar(0, 2.0));
    ts.push_back(polar(b, 3.0));
  }
  Params p = all_region();
  p.positive = Node::Positive::kNone;
  const at::Tensor s = at::randn({4, 2, 1, 1}).requires_grad_(true);
  const at::Tensor tsyn = frames(ts).requires_grad_(true);
  const at::Tensor l = aml(frames(t), s, tsyn, p);
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(l[i].item<float>(), expect[i], 2e-6) << "beta " << beta[i];
  // The same student at 90 degrees under the paper's loss: the positive pair does count there.
  const at::Tensor paper = aml(frames(t), frames({polar(90), polar(90), polar(90), polar(90)}), frames(ts), all_region());
  EXPECT_GT(paper[3].item<float>(), 0.0f);
  l.sum().backward();
  EXPECT_FALSE(s.grad().defined() && s.grad().abs().sum().item<float>() > 0) << "the student's twin got a gradient";
  ASSERT_TRUE(tsyn.grad().defined());
  EXPECT_GT(tsyn.grad()[1].abs().sum().item<float>(), 0.0f) << "theta_n below the margin must be pushed";
  // l2: max(0, l_margin - |t - t'|): 1 - |(2,0) - (3,0)| = 0; margin 4: 3.
  p.distance = Node::Distance::kL2;
  p.l_margin = 4;
  EXPECT_NEAR(aml(frames({{2, 0}}), frames({{9, 9}}), frames({{3, 0}}), p)[0].item<float>(), 3.0, 1e-6);
}

// theta_p_grad: the paper's loss value whatever the scale; the gradient through theta_p scales
// with it: the student's twin (theta_p's only input) gets g times the paper's gradient, the
// synthetic teacher's (theta_n's only input) the paper's, for each distance.
TEST(AngularMarginLossNodeTest, ThetaPGradScalesOnlyThetaPsGradient) {
  at::manual_seed(5);
  const at::Tensor t0 = at::randn({2, 6, 3, 3}), s0 = at::randn({2, 6, 3, 3}), ts0 = t0 + 0.5 * at::randn({2, 6, 3, 3});
  for (auto distance : {Node::Distance::kAngular, Node::Distance::kL2}) {
    auto run = [&](float g, std::vector<at::Tensor>* grads) {
      std::vector<at::Tensor> in{t0.clone().requires_grad_(true), s0.clone().requires_grad_(true),
                                 ts0.clone().requires_grad_(true)};
      Params p = all_region();
      p.distance = distance;
      p.theta_p_grad = g;
      const at::Tensor l = aml(in[0], in[1], in[2], p);
      l.sum().backward();
      for (const auto& x : in) grads->push_back(x.grad().defined() ? x.grad() : at::zeros_like(x));
      return l.detach();
    };
    std::vector<at::Tensor> g_paper, g_half, g_fixed;
    const at::Tensor paper = run(1.0f, &g_paper);
    const at::Tensor half = run(0.5f, &g_half);
    const at::Tensor fixed = run(0.0f, &g_fixed);
    const std::string what = distance == Node::Distance::kAngular ? "angular" : "l2";
    EXPECT_GT(paper.sum().item<float>(), 0.0f) << what << ": some hinge must be active";
    EXPECT_TRUE(at::allclose(half, paper) && at::allclose(fixed, paper)) << what;
    EXPECT_GT(g_paper[1].abs().sum().item<float>(), 0.0f) << what;
    EXPECT_TRUE(at::allclose(g_half[1], 0.5 * g_paper[1])) << what;
    EXPECT_EQ(g_fixed[1].abs().sum().item<float>(), 0.0f) << what << ": the student's twin got a gradient";
    EXPECT_TRUE(at::allclose(g_fixed[2], g_paper[2]) && at::allclose(g_half[2], g_paper[2]))
        << what << ": theta_n's gradient changed";
    EXPECT_FALSE(at::allclose(g_fixed[0], g_paper[0])) << what << ": f(t(I)) still got theta_p's gradient";
  }
}

// Backward at every singular point, for each distance and at margins 0, 15, 180: cos theta_p =
// +1 (student equals teacher) and -1 (opposite), cos theta_n = +1 (untouched pixel) and -1, and
// zero vectors in each input. Loss and gradients stay finite.
TEST(AngularMarginLossNodeTest, GradientsAreFiniteAtSingularPoints) {
  const std::vector<std::vector<float>> t = {{1, 2}, {1, 2}, {1, 2}, {1, 2}, {0, 0}, {1, 2}, {1, 2}, {0, 0}};
  const std::vector<std::vector<float>> s = {{1, 2}, {-1, -2}, {1, 2}, {-2, -4}, {1, 0}, {0, 0}, {3, 1}, {0, 0}};
  const std::vector<std::vector<float>> ts = {{1, 2}, {1, 2}, {-1, -2}, {2, 4}, {0, 1}, {1, 2}, {0, 0}, {0, 0}};
  for (auto d : {Node::Distance::kAngular, Node::Distance::kL1, Node::Distance::kL2})
    for (float m : {0.f, 15.f, 180.f}) {
      at::Tensor a = frames(t).requires_grad_(true), b = frames(s).requires_grad_(true), c = frames(ts).requires_grad_(true);
      Params p = all_region(m);
      p.distance = d;
      const at::Tensor l = aml(a, b, c, p);
      ASSERT_TRUE(at::isfinite(l).all().item<bool>()) << int(d) << " " << m;
      l.sum().backward();
      for (const at::Tensor& x : {a, b, c}) EXPECT_TRUE(at::isfinite(x.grad()).all().item<bool>()) << int(d) << " margin " << m;
    }
}

// The analytic gradient equals central finite differences (float64) at a generic point, through
// the coverage-weighted mask of two levels.
TEST(AngularMarginLossNodeTest, GradientMatchesFiniteDifferences) {
  at::manual_seed(11);
  auto opts = at::TensorOptions().dtype(at::kDouble);
  const std::vector<at::Tensor> base = {at::randn({2, 3, 4, 4}, opts), at::randn({2, 3, 4, 4}, opts),
                                        at::randn({2, 3, 4, 4}, opts), at::randn({2, 3, 2, 2}, opts),
                                        at::randn({2, 3, 2, 2}, opts), at::randn({2, 3, 2, 2}, opts)};
  const at::Tensor mask = (at::rand({2, 1, 8, 8}) > 0.4).to(at::kFloat);
  for (auto d : {Node::Distance::kAngular, Node::Distance::kL2}) {
    Params p;
    p.distance = d;
    p.mask_pooling = Node::MaskPooling::kCoverage;
    p.margin = 40;
    auto f = [&](const std::vector<at::Tensor>& x) {
      return Node::compute({x[0], x[3]}, {x[1], x[4]}, {x[2], x[5]}, mask, p).sum();
    };
    std::vector<at::Tensor> x;
    for (const auto& b : base) x.push_back(b.clone().requires_grad_(true));
    f(x).backward();
    const double h = 1e-6;
    for (size_t i = 0; i < x.size(); ++i)
      for (int64_t k = 0; k < x[i].numel(); k += 7) {
        std::vector<at::Tensor> xp, xm;
        for (const auto& b : base) {
          xp.push_back(b.clone());
          xm.push_back(b.clone());
        }
        xp[i].view(-1)[k] += h;
        xm[i].view(-1)[k] -= h;
        const double num = (f(xp).item<double>() - f(xm).item<double>()) / (2 * h);
        EXPECT_NEAR(x[i].grad().view(-1)[k].item<double>(), num, 1e-6) << "input " << i << " elem " << k;
      }
  }
}

// The frozen teacher's features are inference tensors; the node clones them, and the gradient
// reaches the student branch.
TEST(AngularMarginLossNodeTest, AcceptsInferenceTensors) {
  at::Tensor t, ts, mask;
  {
    c10::InferenceMode guard;
    t = at::randn({2, 4, 4, 4});
    ts = at::randn({2, 4, 4, 4});
    mask = at::ones({2, 1, 8, 8});
  }
  at::Tensor s = at::randn({2, 4, 4, 4}).requires_grad_(true);
  aml(t, s, ts, all_region(90), mask).sum().backward();
  EXPECT_GT(s.grad().abs().sum().item<float>(), 0.0f);
  Params p;
  p.margin = 90;
  at::Tensor s2 = s.detach().clone().requires_grad_(true);
  aml(t, s2, ts, p, mask).sum().backward();
  EXPECT_GT(s2.grad().abs().sum().item<float>(), 0.0f);
}

// Through the runner in batches of 2 (3 frames: the last batch is partial): per-frame results
// equal compute() on each frame alone.
TEST(AngularMarginLossNodeTest, BatchedNodeMatchesPerFrameCompute) {
  RunOptions o;
  o.batch = 2;
  NodeRunner runner(R"({"id": "aml", "type": "AngularMarginLoss", "params": {"margin": 30}})", o);
  at::manual_seed(2);
  std::vector<float> expect;
  Params p;
  p.margin = 30;
  for (int f = 0; f < 3; ++f) {
    const at::Tensor t0 = at::randn({1, 4, 4, 4}), s0 = at::randn({1, 4, 4, 4}), ts0 = at::randn({1, 4, 4, 4});
    const at::Tensor t1 = at::randn({1, 8, 2, 2}), s1 = at::randn({1, 8, 2, 2}), ts1 = at::randn({1, 8, 2, 2});
    const at::Tensor mask = (at::rand({1, 1, 16, 16}) > 0.5).to(at::kFloat);
    runner.push(Node::kTeacher, FeaturePyramid{{t0, t1}});
    runner.push(Node::kStudentSynthetic, FeaturePyramid{{s0, s1}});
    runner.push(Node::kTeacherSynthetic, FeaturePyramid{{ts0, ts1}});
    runner.push(Node::kMask, Tensor{mask});
    expect.push_back(Node::compute({t0, t1}, {s0, s1}, {ts0, ts1}, mask, p).item<float>());
  }
  runner.run();
  for (int f = 0; f < 3; ++f) {
    const at::Tensor out = runner.pop(Node::kLoss).t;
    ASSERT_EQ(out.numel(), 1);
    EXPECT_NEAR(out.item<float>(), expect[f], 1e-6) << "frame " << f;
  }
}

TEST(AngularMarginLossNodeTest, RegionMaskNeedsTheMaskInput) {
  const char* no_mask = R"("in": {"teacher": "t", "student_synthetic": "s", "teacher_synthetic": "ts"})";
  EXPECT_THAT([&] { NodeRunner r(std::string(R"({"id": "aml", "type": "AngularMarginLoss", )") + no_mask + "}"); },
              testing::ThrowsMessage<GraphError>(
                  HasSubstr(R"(node "aml" (AngularMarginLoss): input "mask": is not connected, and region "mask" needs it)")));
  EXPECT_THAT(
      [] {
        Node::compute({at::zeros({1, 2, 2, 2})}, {at::zeros({1, 2, 2, 2})}, {at::zeros({1, 2, 2, 2})}, {}, Params());
      },
      testing::ThrowsMessage<PortError>(HasSubstr(R"(input "mask": is not connected)")));
  // region "all" runs without it.
  NodeRunner r(std::string(R"({"id": "aml", "type": "AngularMarginLoss", "params": {"region": "all"}, )") + no_mask + "}");
  r.push(Node::kTeacher, FeaturePyramid{{frames({polar(0)})}});
  r.push(Node::kStudentSynthetic, FeaturePyramid{{frames({polar(45)})}});
  r.push(Node::kTeacherSynthetic, FeaturePyramid{{frames({polar(45)})}});
  r.run();
  EXPECT_NEAR(r.pop(Node::kLoss).t.item<float>(), kA, 2e-6);
}

TEST(AngularMarginLossNodeTest, MismatchesAreNamed) {
  const at::Tensor a = at::zeros({2, 2, 4, 4}), b = at::zeros({2, 2, 2, 2});
  EXPECT_THAT(
      [&] {
        Node::compute({a, b}, {a, b}, {a, at::zeros({2, 3, 2, 2})}, {}, all_region());
      },
      testing::ThrowsMessage<PortError>(
          HasSubstr(R"(input "teacher_synthetic": level 1 has 3 channels, input "teacher" has 2)")));
  EXPECT_THAT(
      [&] {
        Node::compute({a, b}, {a}, {a, b}, {}, all_region());
      },
      testing::ThrowsMessage<PortError>(HasSubstr(R"(input "student_synthetic": has 1 levels, input "teacher" has 2)")));
  EXPECT_THAT(
      [&] {
        Node::compute({a}, {a}, {a}, at::zeros({2, 3, 8, 8}), Params());
      },
      testing::ThrowsMessage<PortError>(HasSubstr(R"(input "mask": must be [B, 1, H, W] with B = 2, got [2, 3, 8, 8])")));
  Shapes in;
  in.set(Node::kTeacher, Shape::pyramid({{64, 64, 64}, {128, 32, 32}}));
  in.set(Node::kStudentSynthetic, Shape::pyramid({{64, 64, 64}, {128, 32, 32}}));
  in.set(Node::kTeacherSynthetic, Shape::pyramid({{64, 64, 64}, {128, 16, 16}}));
  in.set(Node::kMask, Shape::of({1, 256, 256}));
  EXPECT_THAT([&] { Node::infer(Params(), in); },
              testing::ThrowsMessage<PortError>(
                  HasSubstr(R"(input "teacher_synthetic": level 1 is 16x16 (HxW), input "teacher" is 32x32)")));
  in.set(Node::kTeacherSynthetic, Shape::pyramid({{64, 64, 64}, {128, 32, 32}}));
  EXPECT_TRUE(Node::infer(Params(), in).at(Node::kLoss).dims.empty());
  in.set(Node::kMask, Shape::of({3, 256, 256}));
  EXPECT_THAT([&] { Node::infer(Params(), in); },
              testing::ThrowsMessage<PortError>(HasSubstr(R"(input "mask": has 3 channels)")));
}

TEST(AngularMarginLossNodeTest, BadParamsAreNamed) {
  auto make = [](const std::string& params) {
    NodeRunner r(R"({"id": "aml", "type": "AngularMarginLoss", "params": )" + params + "}");
  };
  EXPECT_THAT([&] { make(R"({"margin": 200})"); },
              testing::ThrowsMessage<GraphError>(
                  HasSubstr(R"(node "aml" (AngularMarginLoss): param "margin": must be in [0, 180], got 200)")));
  EXPECT_THAT([&] { make(R"({"region": "pixels"})"); },
              testing::ThrowsMessage<GraphError>(HasSubstr(R"(param "region": must be one of: mask, all)")));
  EXPECT_THAT([&] { make(R"({"distance": "cos"})"); }, testing::ThrowsMessage<GraphError>(HasSubstr("one of: angular, l1, l2")));
  EXPECT_THAT([&] { make(R"({"mask_pooling": "max"})"); },
              testing::ThrowsMessage<GraphError>(HasSubstr("one of: threshold, coverage")));
  EXPECT_THAT([&] { make(R"({"eps": 0})"); }, testing::ThrowsMessage<GraphError>(HasSubstr(R"(param "eps": must be in)")));
  EXPECT_THAT([&] { make(R"({"l_margin": -1})"); },
              testing::ThrowsMessage<GraphError>(HasSubstr(R"(param "l_margin": must be in)")));
}

}  // namespace
}  // namespace fmam
