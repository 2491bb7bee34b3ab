// Reduced-precision inference (NodeEnv::precision, bf16-mixed): the networks' nodes compute in
// bfloat16 yet hand float32 NCHW tensors on, stay within bfloat16's rounding of their float32
// selves, and keep what must not change (the teacher's fingerprint, training in float32). Also
// the transposed conv the RD decoder now runs as a matrix product, against at::conv_transpose2d.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>

#include "framework/error.h"
#include "networks/resnet.h"
#include "nodes/backbone_node.h"
#include "nodes/feature_map_node.h"
#include "nodes/student_node.h"

namespace fmam {
namespace {

using testing::HasSubstr;

const std::string kWeights = std::string(FMAM_SOURCE_DIR) + "/../shared/weights/resnet18_imagenet1k_v1_to_layer3.pth";

// An executor's construction environment for one node.
struct Env {
  std::map<std::string, std::shared_ptr<void>> store;
  NodeEnv env;
  explicit Env(Precision p, bool training = false) : env("n", Device::kCpu, &store, p, training) {}
};

// Per-pixel cosine similarity over channels, its minimum: what the anomaly map is made of.
double MinCosine(const at::Tensor& a, const at::Tensor& b) { return at::cosine_similarity(a, b, 1).min().item<double>(); }

// Float32, in the layout the float32 node gives (consumers never see what the network ran in).
void ExpectFloat32Like(const std::vector<at::Tensor>& got, const std::vector<at::Tensor>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t j = 0; j < got.size(); ++j) {
    EXPECT_EQ(got[j].scalar_type(), at::kFloat) << "level " << j;
    EXPECT_EQ(got[j].is_contiguous(), want[j].is_contiguous()) << "level " << j;
    EXPECT_EQ(got[j].sizes(), want[j].sizes()) << "level " << j;
  }
}

TEST(ConvTranspose2x2Test, EqualsTorchsTransposedConv) {
  // Batch 3, non-square, odd sizes, channel counts that are not powers of two.
  const at::Tensor x = at::randn({3, 5, 7, 4});
  const at::Tensor w = at::randn({5, 6, 2, 2});
  const at::Tensor want = at::conv_transpose2d(x, w, {}, {2, 2});
  const at::Tensor got = conv_transpose2x2(x, w);
  ASSERT_EQ(got.sizes(), want.sizes());
  EXPECT_TRUE(at::allclose(got, want, 1e-5, 1e-5)) << (got - want).abs().max().item<float>();
  // Channels-last input (the symmetric student's layout) gives the same.
  EXPECT_TRUE(at::allclose(conv_transpose2x2(x.contiguous(at::MemoryFormat::ChannelsLast), w), want, 1e-5, 1e-5));
}

TEST(ConvTranspose2x2Test, GradientsEqualTorchs) {
  const at::Tensor x0 = at::randn({2, 3, 4, 5}), w0 = at::randn({3, 4, 2, 2}), g = at::randn({2, 4, 8, 10});
  at::Tensor x1 = x0.clone().requires_grad_(), w1 = w0.clone().requires_grad_();
  at::Tensor x2 = x0.clone().requires_grad_(), w2 = w0.clone().requires_grad_();
  (conv_transpose2x2(x1, w1) * g).sum().backward();
  (at::conv_transpose2d(x2, w2, {}, {2, 2}) * g).sum().backward();
  EXPECT_TRUE(at::allclose(x1.grad(), x2.grad(), 1e-5, 1e-5));
  EXPECT_TRUE(at::allclose(w1.grad(), w2.grad(), 1e-4, 1e-5));
}

TEST(ConvTranspose2x2Test, MisfitShapesAreAnError) {
  EXPECT_THROW(conv_transpose2x2(at::randn({1, 4, 3, 3}), at::randn({5, 2, 2, 2})), Error);
  EXPECT_THROW(conv_transpose2x2(at::randn({1, 4, 3, 3}), at::randn({4, 2, 3, 3})), Error);
}

TEST(InferencePrecisionTest, Bf16TeacherIsCloseAndKeepsItsFingerprint) {
  BackboneNode::Params p;
  p.weights = kWeights;
  Env e32(Precision::kFloat32), e16(Precision::kBFloat16Mixed);
  BackboneNode fp32(p, e32.env), bf16(p, e16.env);
  const at::Tensor image = at::randn({2, 3, 96, 128});
  const auto want = fp32.forward(image);
  const auto got = bf16.forward(image);
  ExpectFloat32Like(got, want);
  for (size_t j = 0; j < got.size(); ++j) {
    EXPECT_TRUE(got[j].is_contiguous(at::MemoryFormat::ChannelsLast));  // as computed (channels_last: true)
    EXPECT_GT(MinCosine(got[j], want[j]), 0.99) << "level " << j;
    EXPECT_FALSE(at::equal(got[j], want[j])) << "level " << j << ": not computed in bfloat16";
  }
  // A model records the teacher's float32 fingerprint; bf16 inference must still match it.
  EXPECT_EQ(bf16.fingerprint(), fp32.fingerprint());
}

TEST(InferencePrecisionTest, Bf16StudentsAreCloseToFloat32) {
  for (auto kind : {StudentNode::Kind::kReverse, StudentNode::Kind::kSymmetric}) {
    StudentNode::Params p;
    p.kind = kind;
    p.seed = 3;
    Env e32(Precision::kFloat32), e16(Precision::kBFloat16Mixed);
    StudentNode fp32(p, e32.env), bf16(p, e16.env);
    // A trained model's state loads into the bfloat16 weights (as float32, converted).
    std::map<std::string, at::Tensor> state;
    for (const auto& [k, v] : fp32.named_state()) state[k] = v;
    bf16.load_state(state);
    std::vector<at::Tensor> in;
    if (kind == StudentNode::Kind::kReverse)
      in = {at::rand({2, 64, 32, 32}), at::rand({2, 128, 16, 16}), at::rand({2, 256, 8, 8})};
    else
      in = {at::randn({2, 3, 128, 128})};
    const auto want = fp32.forward(in);
    const auto got = bf16.forward(in);
    ExpectFloat32Like(got, want);
    for (size_t j = 0; j < got.size(); ++j) EXPECT_GT(MinCosine(got[j], want[j]), 0.98) << "level " << j;
    // Its conv weights are bfloat16 copies: training it would update those.
    EXPECT_THROW(bf16.set_training(true), Error);
  }
}

TEST(InferencePrecisionTest, Bf16FeatureMapIsCloseToFloat32) {
  FeatureMapNode::Params p;
  p.channels = {8, 16};
  p.seed = 2;
  Env e32(Precision::kFloat32), e16(Precision::kBFloat16Mixed);
  FeatureMapNode fp32(p, e32.env), bf16(p, e16.env);
  bool any_bf16 = false;
  for (const auto& [k, v] : bf16.named_state()) any_bf16 |= v.scalar_type() == at::kBFloat16;
  EXPECT_TRUE(any_bf16);
  const std::vector<at::Tensor> in = {at::rand({2, 8, 6, 5}), at::rand({2, 16, 3, 3})};
  const auto want = fp32.forward(in);
  const auto got = bf16.forward(in);
  ExpectFloat32Like(got, want);
  for (size_t j = 0; j < got.size(); ++j) EXPECT_GT(MinCosine(got[j], want[j]), 0.99);
}

TEST(InferencePrecisionTest, TrainingGraphsKeepFloat32WeightsButABf16Teacher) {
  // A training executor hands out bf16-mixed with training() set: the trained nodes keep float32
  // weights (autocast does their bf16), the frozen teacher computes in bfloat16.
  Env e(Precision::kBFloat16Mixed, /*training=*/true);
  StudentNode s(StudentNode::Params{}, e.env);
  FeatureMapNode::Params fp;
  fp.channels = {8};
  FeatureMapNode fm(fp, e.env);
  for (const auto& [k, v] : s.named_state()) EXPECT_NE(v.scalar_type(), at::kBFloat16) << k;
  for (const auto& [k, v] : fm.named_state()) EXPECT_NE(v.scalar_type(), at::kBFloat16) << k;
  EXPECT_NO_THROW(s.set_training(true));
  EXPECT_NO_THROW(fm.set_training(true));
  BackboneNode::Params bp;
  bp.weights = kWeights;
  Env e32(Precision::kFloat32, true);
  BackboneNode t16(bp, e.env), t32(bp, e32.env);
  const at::Tensor image = at::randn({1, 3, 64, 64});
  EXPECT_FALSE(at::equal(t16.forward(image)[0], t32.forward(image)[0]));
  // Training graphs get the teacher's pyramid in NCHW (inference ones channels-last).
  for (const auto& level : t16.forward(image)) EXPECT_TRUE(level.is_contiguous());
  for (const auto& level : t32.forward(image)) EXPECT_TRUE(level.is_contiguous());
}

}  // namespace
}  // namespace fmam
