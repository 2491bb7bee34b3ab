// Adam (training/adam.h) against torch.optim.Adam 1.13: tests/testdata/adam_fixture.json, written
// by tests/testdata/make_adam_fixture.py (Debian's /usr/bin/python3, torch 1.13; the L1 term
// added to the gradient by hand there). Plus the state round trip that resuming relies on.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "framework/error.h"
#include "training/adam.h"

namespace fmam {
namespace {

using json = nlohmann::json;

json load_fixture() {
  const std::string path = std::string(FMAM_SOURCE_DIR) + "/tests/testdata/adam_fixture.json";
  std::ifstream f(path);
  EXPECT_TRUE(f.good()) << path;
  return json::parse(f);
}

at::Tensor from_json(const json& j) {
  std::vector<float> v;
  for (const auto& x : j.at("values")) v.push_back(float(x.get<double>()));
  std::vector<int64_t> shape = j.at("shape").get<std::vector<int64_t>>();
  return at::tensor(v, at::kFloat).reshape(shape).clone();
}

AdamOptions options_of(const json& o) {
  AdamOptions a;
  a.lr = o.at("lr");
  a.beta1 = o.at("beta1");
  a.beta2 = o.at("beta2");
  a.eps = o.at("eps");
  a.weight_decay = o.at("weight_decay");
  a.l1 = o.at("l1");
  return a;
}

const json& find_case(const json& fx, const std::string& name) {
  for (const auto& c : fx.at("cases"))
    if (c.at("name") == name) return c;
  throw std::runtime_error("no case " + name);
}

// Largest |a - b| (both float32).
float max_diff(const at::Tensor& a, const at::Tensor& b) { return (a.detach() - b.detach()).abs().max().item<float>(); }

// Same library and op order as torch: on the machine that wrote the fixture the match is exact
// (checked with a tolerance of 0); a few float32 ulps allow another CPU's vector code paths.
constexpr float kTol = 2e-6f;

TEST(AdamTest, MatchesTorchGivenGradientsWithWeightDecayAndL1) {
  const json fx = load_fixture();
  const json& c = find_case(fx, "given_grads");
  at::Tensor w = from_json(c["init"]["w"]).requires_grad_(true);
  at::Tensor b = from_json(c["init"]["b"]).requires_grad_(true);
  Adam opt({w, b}, options_of(c["options"]));
  for (size_t k = 0; k < c["grads"].size(); ++k) {
    opt.zero_grad();
    const json& g = c["grads"][k];
    if (!g["w"].is_null()) w.mutable_grad() = from_json(g["w"]);
    if (!g["b"].is_null()) b.mutable_grad() = from_json(g["b"]);
    opt.step();
    EXPECT_LE(max_diff(w, from_json(c["after"][k]["w"])), kTol) << "step " << k + 1;
    EXPECT_LE(max_diff(b, from_json(c["after"][k]["b"])), kTol) << "step " << k + 1;
  }
  EXPECT_EQ(opt.steps(), 5);
  // b had no grad at step 3: torch kept its step count (and moments) as they were.
  const auto st = opt.state();
  std::map<std::string, at::Tensor> m(st.begin(), st.end());
  EXPECT_EQ(m["param_step"][0].item<int64_t>(), int64_t(c["final_state"]["w"]["step"].get<double>()));
  EXPECT_EQ(m["param_step"][1].item<int64_t>(), int64_t(c["final_state"]["b"]["step"].get<double>()));
  EXPECT_EQ(m["param_step"][1].item<int64_t>(), 4);
  EXPECT_LE(max_diff(m["exp_avg.0"], from_json(c["final_state"]["w"]["exp_avg"])), 1e-7f);
  EXPECT_LE(max_diff(m["exp_avg_sq.1"], from_json(c["final_state"]["b"]["exp_avg_sq"])), 1e-7f);
}

void run_quadratic(const std::string& name) {
  const json fx = load_fixture();
  const json& c = find_case(fx, name);
  const at::Tensor x = from_json(c["x"]), y = from_json(c["y"]);
  at::Tensor w = from_json(c["init"]["w"]).requires_grad_(true);
  at::Tensor b = from_json(c["init"]["b"]).requires_grad_(true);
  Adam opt({w, b}, options_of(c["options"]));
  for (size_t k = 0; k < c["after"].size(); ++k) {
    opt.zero_grad();
    (at::matmul(x, w) + b - y).pow(2).mean().backward();
    opt.step();
    EXPECT_LE(max_diff(w, from_json(c["after"][k]["w"])), kTol) << name << " step " << k + 1;
    EXPECT_LE(max_diff(b, from_json(c["after"][k]["b"])), kTol) << name << " step " << k + 1;
  }
}

TEST(AdamTest, MatchesTorchOnQuadraticWithWeightDecayAndL1) { run_quadratic("quadratic"); }
TEST(AdamTest, MatchesTorchOnQuadraticPlain) { run_quadratic("plain"); }

// L1 acts through sign(p): a zero param with a zero gradient stays exactly 0 (sign(0) = 0), a
// positive one with a zero gradient moves down by lr on the first step (Adam normalises).
TEST(AdamTest, L1IsTheSignSubgradient) {
  at::Tensor p = at::tensor({0.0f, 2.0f, -3.0f}).requires_grad_(true);
  AdamOptions o;
  o.lr = 0.1;
  o.l1 = 1e-3;
  Adam opt({p}, o);
  p.mutable_grad() = at::zeros({3});
  opt.step();
  EXPECT_EQ(p[0].item<float>(), 0.0f);
  // First step: m = (1-b1) g, v = (1-b2) g^2, update = lr * g / (|g| + eps') = lr * sign(g).
  EXPECT_NEAR(p[1].item<float>(), 2.0f - 0.1f, 1e-5);
  EXPECT_NEAR(p[2].item<float>(), -3.0f + 0.1f, 1e-5);
}

// Resuming: 3 steps, state(), a new Adam on copies of the params loads it, 2 more steps == 5
// steps straight, bit for bit.
TEST(AdamTest, StateRoundTripResumesBitExactly) {
  at::manual_seed(7);
  const at::Tensor x = at::randn({8, 5}), y = at::randn({8, 3});
  const at::Tensor w0 = at::randn({5, 3}), b0 = at::randn({3});
  AdamOptions o;
  o.lr = 0.02;
  o.weight_decay = 1e-3;
  o.l1 = 1e-4;
  auto train = [&](Adam& opt, at::Tensor& w, at::Tensor& b, int steps) {
    for (int k = 0; k < steps; ++k) {
      opt.zero_grad();
      (at::matmul(x, w) + b - y).pow(2).mean().backward();
      opt.step();
    }
  };

  at::Tensor w1 = w0.clone().requires_grad_(true), b1 = b0.clone().requires_grad_(true);
  Adam straight({w1, b1}, o);
  train(straight, w1, b1, 5);

  at::Tensor w2 = w0.clone().requires_grad_(true), b2 = b0.clone().requires_grad_(true);
  Adam first({w2, b2}, o);
  train(first, w2, b2, 3);
  const Adam::NamedTensors saved = first.state();
  // What a model file would hold: detached copies of params and state.
  at::Tensor w3 = w2.detach().clone().requires_grad_(true);
  at::Tensor b3 = b2.detach().clone().requires_grad_(true);
  Adam resumed({w3, b3}, o);
  resumed.load_state(saved);
  EXPECT_EQ(resumed.steps(), 3);
  train(resumed, w3, b3, 2);

  EXPECT_EQ(resumed.steps(), 5);
  EXPECT_TRUE(at::equal(w3, w1));
  EXPECT_TRUE(at::equal(b3, b1));
  const auto s1 = straight.state(), s3 = resumed.state();
  ASSERT_EQ(s1.size(), s3.size());
  for (size_t i = 0; i < s1.size(); ++i) {
    EXPECT_EQ(s1[i].first, s3[i].first);
    EXPECT_TRUE(at::equal(s1[i].second, s3[i].second)) << s1[i].first;
  }
}

// state() hands out copies: stepping afterwards does not change a saved state.
TEST(AdamTest, StateIsASnapshot) {
  at::Tensor p = at::ones({2}).requires_grad_(true);
  Adam opt({p});
  p.mutable_grad() = at::ones({2});
  opt.step();
  const auto saved = opt.state();
  const at::Tensor m = saved[2].second.clone();
  opt.step();
  EXPECT_EQ(saved[2].first, "exp_avg.0");
  EXPECT_TRUE(at::equal(saved[2].second, m));
  EXPECT_EQ(saved[0].second.item<int64_t>(), 1);
}

TEST(AdamTest, ZeroGradSetsToNoneOrZeroes) {
  at::Tensor p = at::ones({2}).requires_grad_(true);
  Adam opt({p});
  p.mutable_grad() = at::ones({2});
  opt.zero_grad(/*set_to_none=*/false);
  ASSERT_TRUE(p.grad().defined());
  EXPECT_EQ(p.grad().abs().sum().item<float>(), 0.0f);
  opt.zero_grad();
  EXPECT_FALSE(p.grad().defined());
  // No grad: step() leaves the param alone but still counts the call.
  opt.step();
  EXPECT_EQ(p[0].item<float>(), 1.0f);
  EXPECT_EQ(opt.steps(), 1);
}

TEST(AdamTest, LoadStateNamesEveryProblem) {
  at::Tensor a = at::zeros({2, 3}).requires_grad_(true), b = at::zeros({4}).requires_grad_(true);
  Adam opt({a, b});
  Adam::NamedTensors st = opt.state();
  std::map<std::string, at::Tensor> m(st.begin(), st.end());
  m.erase("exp_avg_sq.1");
  m["exp_avg.0"] = at::zeros({3, 2});
  m["momentum.0"] = at::zeros({1});
  EXPECT_THAT([&] { opt.load_state(m); },
              testing::ThrowsMessage<Error>(testing::AllOf(testing::HasSubstr("missing: exp_avg_sq.1"),
                                                           testing::HasSubstr("mis-shaped: exp_avg.0 [3, 2] (expected [2, 3])"),
                                                           testing::HasSubstr("unexpected: momentum.0"))));
}

TEST(AdamTest, BadOptionsAreNamed) {
  at::Tensor p = at::zeros({1});
  AdamOptions o;
  o.lr = -1;
  EXPECT_THAT([&] { Adam a({p}, o); }, testing::ThrowsMessage<Error>(testing::HasSubstr("option \"lr\" must be >= 0")));
  o = AdamOptions();
  o.beta2 = 1.0;
  EXPECT_THAT([&] { Adam a({p}, o); }, testing::ThrowsMessage<Error>(testing::HasSubstr("option \"beta2\" must be in [0, 1)")));
  o = AdamOptions();
  o.l1 = -1e-5;
  EXPECT_THAT([&] { Adam a({p}, o); }, testing::ThrowsMessage<Error>(testing::HasSubstr("option \"l1\"")));
  EXPECT_THAT([&] { Adam a({at::Tensor()}); }, testing::ThrowsMessage<Error>(testing::HasSubstr("param 0 is undefined")));
}

}  // namespace
}  // namespace fmam
