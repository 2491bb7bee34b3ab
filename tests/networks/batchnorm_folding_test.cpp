// Network::set_batchnorm_folding: eval-mode forwards with BatchNorm folded into the convs give
// what the unfolded network gives (float tolerance), follow every change of the weights, never
// touch training-mode forwards, and combine with bf16-mixed inference.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <map>
#include <string>
#include <thread>
#include <vector>

#include "framework/cpu_features.h"
#include "networks/resnet.h"

namespace fmam {
namespace {

// A state like a trained one: BatchNorm statistics and affine parameters far from 0/1, so that a
// fold that forgot a term (eps, the mean, beta) shows.
std::map<std::string, at::Tensor> TrainedLikeState(const Network& net, uint64_t seed) {
  at::manual_seed(seed);
  std::map<std::string, at::Tensor> state;
  for (const auto& [name, t] : net.named_state()) {
    at::Tensor v = t.detach().clone();
    const auto ends = [&](const std::string& s) {
      return name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0;
    };
    if (ends("running_var"))
      v = at::rand_like(v) + 0.5;
    else if (ends("running_mean"))
      v = at::randn_like(v) * 0.2;
    else if (t.dim() == 1 && ends(".weight"))
      v = at::randn_like(v) * 0.2 + 1.0;
    else if (t.dim() == 1 && ends(".bias"))
      v = at::randn_like(v) * 0.1;
    else if (t.is_floating_point())
      v = at::randn_like(v) * (1.0 / std::sqrt(double(t[0].numel())));
    state[name] = v;
  }
  return state;
}

std::vector<at::Tensor> TeacherLikePyramid(int64_t batch) {
  at::manual_seed(3);
  return {at::randn({batch, 64, 32, 32}).relu(), at::randn({batch, 128, 16, 16}).relu(), at::randn({batch, 256, 8, 8}).relu()};
}

std::vector<at::Tensor> Forward(const Network& net, const std::vector<at::Tensor>& in) {
  c10::InferenceMode guard;
  return net.forward(in);
}

void ExpectClose(const std::vector<at::Tensor>& got, const std::vector<at::Tensor>& want, double tol) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t j = 0; j < got.size(); ++j) {
    ASSERT_EQ(got[j].sizes(), want[j].sizes()) << "level " << j;
    EXPECT_EQ(got[j].scalar_type(), at::kFloat) << "level " << j;
    const double err = (got[j] - want[j]).abs().max().item<double>() / want[j].abs().max().item<double>();
    EXPECT_LT(err, tol) << "level " << j;
  }
}

// The same network twice: one folds, one does not.
struct Pair {
  Network plain, folded;
  Pair(Network a, Network b, uint64_t seed) : plain(std::move(a)), folded(std::move(b)) {
    const auto state = TrainedLikeState(plain, seed);
    plain.load_state(state);
    folded.load_state(state);
    plain.train(false);
    folded.train(false);
    folded.set_batchnorm_folding(true);
  }
};

TEST(BatchNormFoldingTest, ReverseStudentGivesTheUnfoldedOutputs) {
  Pair n(make_reverse_student(Arch::kResNet18, 1), make_reverse_student(Arch::kResNet18, 1), 11);
  const auto in = TeacherLikePyramid(2);
  EXPECT_FALSE(n.folded.is_folded());
  ExpectClose(Forward(n.folded, in), Forward(n.plain, in), 1e-4);
  EXPECT_TRUE(n.folded.is_folded());  // the folded path ran, not the modules' BatchNorms
  EXPECT_FALSE(n.plain.is_folded());
}

TEST(BatchNormFoldingTest, SymmetricChannelsLastResNetGivesTheUnfoldedOutputs) {
  Pair n(make_resnet(Arch::kResNet18, {1, 2, 3}, 2), make_resnet(Arch::kResNet18, {1, 2, 3}, 2), 12);
  n.plain.to_channels_last();
  n.folded.to_channels_last();
  at::manual_seed(4);
  const std::vector<at::Tensor> in{at::randn({2, 3, 64, 64}).contiguous(at::MemoryFormat::ChannelsLast)};
  ExpectClose(Forward(n.folded, in), Forward(n.plain, in), 1e-4);
  EXPECT_TRUE(n.folded.is_folded());
}

TEST(BatchNormFoldingTest, NewWeightsAreFoldedAgain) {
  Pair n(make_reverse_student(Arch::kResNet18, 1), make_reverse_student(Arch::kResNet18, 1), 11);
  const auto in = TeacherLikePyramid(1);
  Forward(n.folded, in);  // folds the first state
  const auto other = TrainedLikeState(n.plain, 99);
  n.plain.load_state(other);
  n.folded.load_state(other);
  EXPECT_FALSE(n.folded.is_folded());
  ExpectClose(Forward(n.folded, in), Forward(n.plain, in), 1e-4);
}

TEST(BatchNormFoldingTest, TrainingModeForwardsIgnoreTheFoldedWeights) {
  Pair n(make_reverse_student(Arch::kResNet18, 1), make_reverse_student(Arch::kResNet18, 1), 11);
  const auto in = TeacherLikePyramid(2);
  Forward(n.folded, in);
  n.plain.train(true);
  n.folded.train(true);
  EXPECT_FALSE(n.folded.is_folded());
  // Batch statistics, gradients: bit for bit the modules' own forward.
  const auto a = n.plain.forward(in), b = n.folded.forward(in);
  for (size_t j = 0; j < a.size(); ++j) EXPECT_TRUE(at::equal(a[j], b[j])) << "level " << j;
  EXPECT_TRUE(b[0].requires_grad());
}

// Why bf16 needs AVX-512 (framework/cpu_features.h): with oneDNN's kernels a bfloat16 conv sums in
// float32 and lands within about 0.4 % of float32 (its inputs' rounding); without them PyTorch's
// fallback sums in bfloat16 (measured 5.4 % off on an AVX2 host). Checked on every CPU, each side.
TEST(BatchNormFoldingTest, Bf16ConvSumsInFloat32OnlyWhereOneDnnHasKernels) {
  at::manual_seed(0);
  const at::Tensor x = at::randn({2, 256, 32, 32}), w = at::randn({128, 256, 3, 3}) * 0.05;
  const at::Tensor want = at::conv2d(x, w, {}, 1, 1);
  const at::Tensor got = at::conv2d(x.to(at::kBFloat16), w.to(at::kBFloat16), {}, 1, 1).to(at::kFloat);
  const double rel = ((got - want).norm() / want.norm()).item<double>();
  if (cpu_has_bf16_kernels())
    EXPECT_LT(rel, 0.01);
  else
    EXPECT_GT(rel, 0.02) << "the fallback sums in float32 now: bf16 may be fine on CPUs without AVX-512";
}

TEST(BatchNormFoldingTest, Bf16FoldsFromTheFloat32Weights) {
  if (!cpu_has_bf16_kernels())
    GTEST_SKIP() << "oneDNN has no bfloat16 kernels for this CPU (no AVX-512): PyTorch's fallback sums in bfloat16";
  Pair n(make_reverse_student(Arch::kResNet18, 1), make_reverse_student(Arch::kResNet18, 1), 11);
  n.folded.set_inference_precision(Precision::kBFloat16Mixed);
  for (const auto& [name, t] : n.folded.named_state())
    if (t.is_floating_point()) EXPECT_EQ(t.scalar_type(), at::kFloat) << name;  // not cast in place
  const auto in = TeacherLikePyramid(2);
  const auto got = Forward(n.folded, in), want = Forward(n.plain, in);
  for (size_t j = 0; j < got.size(); ++j)
    EXPECT_GT(at::cosine_similarity(got[j], want[j], 1).min().item<double>(), 0.99) << "level " << j;
  ExpectClose(got, want, 0.05);
}

TEST(BatchNormFoldingTest, ConcurrentFirstForwardsFoldOnceAndAgree) {
  Pair n(make_reverse_student(Arch::kResNet18, 1), make_reverse_student(Arch::kResNet18, 1), 11);
  const auto in = TeacherLikePyramid(1);
  std::vector<std::vector<at::Tensor>> out(4);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < out.size(); ++i) threads.emplace_back([&, i] { out[i] = Forward(n.folded, in); });
  for (auto& t : threads) t.join();
  for (size_t i = 1; i < out.size(); ++i)
    for (size_t j = 0; j < out[0].size(); ++j) EXPECT_TRUE(at::equal(out[i][j], out[0][j])) << "thread " << i;
  ExpectClose(out[0], Forward(n.plain, in), 1e-4);
}

TEST(ConvTranspose2x2Test, BiasIsAddedPerOutputChannel) {
  const at::Tensor x = at::randn({2, 5, 3, 4}), w = at::randn({5, 6, 2, 2}), b = at::randn({6});
  const at::Tensor want = at::conv_transpose2d(x, w, b, {2, 2});
  EXPECT_TRUE(at::allclose(conv_transpose2x2(x, w, b), want, 1e-5, 1e-5));
}

// The inference variant the folded decoder runs: NCHW and channels-last input (whose output is
// channels-last), float32 and bfloat16 weights, with and without a bias, odd sizes, batch 1 and 3.
TEST(ConvTranspose2x2Test, InferenceVariantEqualsTorchsTransposedConv) {
  at::manual_seed(7);
  c10::InferenceMode guard;
  for (int64_t batch : {1, 3})
    for (bool bias : {true, false})
      for (auto type : {at::kFloat, at::kBFloat16})
        for (auto format : {at::MemoryFormat::Contiguous, at::MemoryFormat::ChannelsLast}) {
          const at::Tensor x = at::randn({batch, 5, 3, 7}), w = at::randn({5, 6, 2, 2}), b = bias ? at::randn({6}) : at::Tensor();
          const at::Tensor want = at::conv_transpose2d(x, w, b, {2, 2});
          const ConvTranspose2x2 op(w.to(type), bias ? b.to(type) : b);
          const at::Tensor got = op(x.to(type).contiguous(format));
          const std::string what = "batch " + std::to_string(batch) + (bias ? " bias " : " ") +
                                   (type == at::kFloat ? "fp32 " : "bf16 ") +
                                   (format == at::MemoryFormat::Contiguous ? "NCHW" : "NHWC");
          ASSERT_EQ(got.sizes(), want.sizes()) << what;
          EXPECT_EQ(got.scalar_type(), type) << what;
          const double tol = type == at::kFloat ? 1e-5 : 0.05 * want.abs().max().item<double>();
          EXPECT_TRUE(at::allclose(got.to(at::kFloat), want, tol, tol)) << what;
          if (format == at::MemoryFormat::ChannelsLast) EXPECT_TRUE(got.is_contiguous(at::MemoryFormat::ChannelsLast)) << what;
        }
  EXPECT_THROW(ConvTranspose2x2(at::randn({5, 6, 3, 3})), Error);
  EXPECT_THROW(ConvTranspose2x2(at::randn({5, 6, 2, 2}))(at::randn({1, 4, 3, 3})), Error);
}

}  // namespace
}  // namespace fmam
