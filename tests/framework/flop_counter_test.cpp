// FlopCounting: the multiply-adds of convolutions (forward and backward) and matrix products,
// counted as libtorch runs them, against the textbook formulas; nothing counted outside a
// FlopCounting.
#include "framework/flop_counter.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gtest/gtest.h>

#include <thread>

namespace fmam {
namespace {

double counted(const std::function<void()>& work) {
  const double before = thread_flops();
  work();
  return thread_flops() - before;
}

TEST(FlopCounterTest, ConvolutionsAndProductsMatchTheirFormulas) {
  FlopCounting counting;
  c10::InferenceMode guard;  // as nodes run
  // 3x3 conv, stride 2, pad 1: [2, 8, 10, 12] -> [2, 16, 5, 6]; 2 * outputs * Cin * 3 * 3.
  const at::Tensor x = at::randn({2, 8, 10, 12}), w = at::randn({16, 8, 3, 3});
  EXPECT_DOUBLE_EQ(counted([&] { at::conv2d(x, w, {}, 2, 1); }), 2.0 * (2 * 16 * 5 * 6) * (8 * 3 * 3));
  // Grouped: each output sees Cin / groups inputs.
  const at::Tensor wg = at::randn({16, 2, 3, 3});
  EXPECT_DOUBLE_EQ(counted([&] { at::conv2d(x, wg, {}, 1, 1, 1, 4); }), 2.0 * (2 * 16 * 10 * 12) * (2 * 3 * 3));
  // Transposed 2x2 stride 2: each input element feeds Cout * 2 * 2 outputs.
  const at::Tensor wt = at::randn({8, 4, 2, 2});
  EXPECT_DOUBLE_EQ(counted([&] { at::conv_transpose2d(x, wt, {}, 2); }), 2.0 * (2 * 8 * 10 * 12) * (4 * 2 * 2));
  // oneDNN's convolution called directly (float32 inference does) counts once; inside
  // aten::convolution (at::conv2d may run it) it is not counted again.
  EXPECT_DOUBLE_EQ(counted([&] {
                     at::mkldnn_convolution(x, w, {}, {1, 1}, {2, 2}, {1, 1}, 1);
                   }),
                   2.0 * (2 * 16 * 5 * 6) * (8 * 3 * 3));
  const at::Tensor x4 = at::randn({32, 8, 10, 12}), w1 = at::randn({16, 8, 1, 1});
  EXPECT_DOUBLE_EQ(counted([&] { at::conv2d(x4, w1); }), 2.0 * (32 * 16 * 10 * 12) * 8);
  // Products: 2 * M * N * K.
  const at::Tensor a = at::randn({7, 5}), b = at::randn({5, 3}), c = at::randn({3});
  EXPECT_DOUBLE_EQ(counted([&] { at::mm(a, b); }), 2.0 * 7 * 3 * 5);
  EXPECT_DOUBLE_EQ(counted([&] { at::addmm(c, a, b); }), 2.0 * 7 * 3 * 5);
  EXPECT_DOUBLE_EQ(counted([&] { at::bmm(at::randn({4, 7, 5}), at::randn({4, 5, 3})); }), 2.0 * 4 * 7 * 3 * 5);
  // Element-wise work is not counted.
  EXPECT_DOUBLE_EQ(counted([&] { at::relu(x); }), 0.0);
}

// Training's backward: a convolution's input gradient and its weight gradient each cost what the
// forward does; only the gradients autograd needs are computed and counted.
TEST(FlopCounterTest, BackwardCountsTheGradientsItComputes) {
  FlopCounting counting;
  const double fwd = 2.0 * (2 * 16 * 5 * 6) * (8 * 3 * 3);
  const at::Tensor w = at::randn({16, 8, 3, 3}).requires_grad_();
  const at::Tensor x = at::randn({2, 8, 10, 12}).requires_grad_();
  at::Tensor y;
  EXPECT_DOUBLE_EQ(counted([&] { y = at::conv2d(x, w, {}, 2, 1); }), fwd);
  EXPECT_DOUBLE_EQ(counted([&] { y.sum().backward(); }), 2 * fwd);  // input and weight
  // A frozen input (the teacher's features): the weight's gradient only.
  const at::Tensor frozen = at::randn({2, 8, 10, 12});
  y = at::conv2d(frozen, w, {}, 2, 1);
  EXPECT_DOUBLE_EQ(counted([&] { y.sum().backward(); }), fwd);
  // Transposed: the forward's count is per input element.
  const at::Tensor wt = at::randn({8, 4, 2, 2}).requires_grad_();
  y = at::conv_transpose2d(x, wt, {}, 2);
  EXPECT_DOUBLE_EQ(counted([&] { y.sum().backward(); }), 2 * (2.0 * (2 * 8 * 10 * 12) * (4 * 2 * 2)));
  // A product's backward is two products, each counted as one.
  const at::Tensor a = at::randn({7, 5}).requires_grad_(), b = at::randn({5, 3}).requires_grad_();
  y = at::mm(a, b);
  EXPECT_DOUBLE_EQ(counted([&] { y.sum().backward(); }), 2 * (2.0 * 7 * 3 * 5));
}

// all_threads_flops() adds up every thread's work (training's teacher runs on another thread).
TEST(FlopCounterTest, AllThreadsTotalIncludesOtherThreads) {
  FlopCounting counting;
  const at::Tensor a = at::randn({7, 5}), b = at::randn({5, 3});
  const double before = all_threads_flops();
  std::thread t([&] { at::mm(a, b); });
  t.join();
  at::mm(a, b);
  EXPECT_DOUBLE_EQ(all_threads_flops() - before, 2 * (2.0 * 7 * 3 * 5));
}

TEST(FlopCounterTest, NothingIsCountedWithoutACounting) {
  const at::Tensor a = at::randn({7, 5}), b = at::randn({5, 3});
  EXPECT_DOUBLE_EQ(counted([&] { at::mm(a, b); }), 0.0);
}

}  // namespace
}  // namespace fmam
