// The shared Halide runtime as the nodes use it (nodes/halide_support.h): parallel loops on TBB,
// errors caught by fmam's handler instead of aborting, the CUDA variants built, and a CUDA
// request on a machine without a usable GPU falling back to the CPU with identical results.
#include <ATen/ops/rand.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <opencv2/core.hpp>

#include "nodes/gaussian_blur_node.h"
#include "nodes/halide_support.h"
#include "nodes/top_k_score_node.h"
#include "nodes/upsample_sum_node.h"
#include "tests/support/helpers.h"

namespace fmam {
namespace {

using testing::HasSubstr;

using test::RandomMap;

bool Identical(const cv::Mat& a, const cv::Mat& b) { return a.size() == b.size() && cv::norm(a, b, cv::NORM_INF) == 0.0; }

TEST(HalideRuntimeTest, ParallelLoopsRunOnTbb) {
  const long long before = hl::tbb_par_for_calls();
  GaussianBlurNode::blur(RandomMap(256, 256, 1), 4.0f);
  // Two parallel loops in the CPU schedule: the row pass and the column pass.
  EXPECT_GE(hl::tbb_par_for_calls() - before, 2);
}

TEST(HalideRuntimeTest, CudaVariantsAreBuilt) {
#ifdef FMAM_HALIDE_CUDA
  EXPECT_TRUE(hl::cuda_kernels_built());
#else
  EXPECT_FALSE(hl::cuda_kernels_built());
  GTEST_SKIP() << "configured with FMAM_CUDA_KERNELS=OFF";
#endif
}

// halide_error() inside a kernel call lands in that call's context and comes back as an
// fmam::Error naming the kernel, instead of Halide's default print-and-abort.
TEST(HalideRuntimeTest, KernelErrorsBecomeFmamErrors) {
  auto failing = [](void* user_context) {
    halide_error(user_context, "something broke\n");
    return -1;
  };
  EXPECT_THAT([&] { hl::run("test_kernel", Device::kCpu, failing, nullptr); },
              testing::ThrowsMessage<Error>(HasSubstr("Halide kernel test_kernel failed: something broke")));
  auto silent = [](void*) { return -7; };
  EXPECT_THAT([&] { hl::run("test_kernel", Device::kCpu, silent, nullptr); },
              testing::ThrowsMessage<Error>(HasSubstr("Halide error code -7")));
}

// device = cuda on a machine without a usable GPU: each kernel's CUDA variant is tried (the
// first one fails inside Halide's CUDA runtime and is caught), CUDA is given up with one stderr
// line, and every result is bit-identical to the CPU run. On a machine with a GPU the results are
// only close (different summation hardware), which the *DeviceTest suites check.
TEST(HalideRuntimeTest, CudaRequestWithoutGpuFallsBackToCpuIdentically) {
  cv::Mat map = RandomMap(96, 128, 2);
  cv::Mat blur_cuda = GaussianBlurNode::blur(map, 4.0f, Device::kCuda);
  if (hl::cuda_usable()) GTEST_SKIP() << "a CUDA device is usable here: no fallback to test";
  cv::Mat blur_cpu = GaussianBlurNode::blur(map, 4.0f, Device::kCpu);
  EXPECT_TRUE(Identical(blur_cuda, blur_cpu));

  std::vector<at::Tensor> levels = {at::rand({1, 1, 24, 32}), at::rand({1, 1, 12, 16})};
  UpsampleSumNode::Params p;
  p.width = 128;
  p.height = 96;
  EXPECT_TRUE(
      Identical(UpsampleSumNode::upsample_sum(levels, p, Device::kCuda), UpsampleSumNode::upsample_sum(levels, p, Device::kCpu)));
  EXPECT_EQ(TopKScoreNode::top_k_mean(map, 100, Device::kCuda), TopKScoreNode::top_k_mean(map, 100, Device::kCpu));

  if (hl::cuda_kernels_built()) {
    // The reason names the kernel that tried and what Halide's CUDA runtime said.
    EXPECT_THAT(hl::cuda_fallback_reason(), HasSubstr("kernel "));
    EXPECT_THAT(hl::cuda_fallback_reason(), testing::ContainsRegex("[Cc][Uu][Dd][Aa]"));
  }
}

}  // namespace
}  // namespace fmam
