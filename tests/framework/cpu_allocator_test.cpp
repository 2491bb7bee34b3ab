// The caching CPU allocator (framework/cpu_allocator.h): values survive, a freed block serves the
// next request of its size, the cache respects its bound and empties on request, the raw
// interface oneDNN uses works for small and large blocks, networks train on it, and threads
// allocating and freeing at once do not corrupt it. ctest runs each test in its own process, so
// installing the allocator here does not reach other tests.
#include "framework/cpu_allocator.h"

#include <ATen/ATen.h>
#include <c10/core/CPUAllocator.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "framework/error.h"
#include "networks/resnet.h"

namespace fmam {
namespace {

constexpr size_t kMiB = size_t(1) << 20;

TEST(CpuAllocatorTest, FreedBlocksServeTheNextRequestOfTheirSize) {
  install_caching_cpu_allocator(256 * kMiB);
  ASSERT_TRUE(caching_cpu_allocator_installed());
  void* first = nullptr;
  {
    at::Tensor t = at::arange(4 * 1024 * 1024, at::kFloat);  // 16 MiB
    first = t.data_ptr();
    EXPECT_EQ(t[123457].item<float>(), 123457.0f);
  }
  const CpuCacheStats before = caching_cpu_allocator_stats();
  EXPECT_GE(before.cached_bytes, 16 * kMiB);
  at::Tensor again = at::empty({4 * 1024 * 1024}, at::kFloat);
  EXPECT_EQ(again.data_ptr(), first) << "the cached block was not reused";
  EXPECT_EQ(caching_cpu_allocator_stats().hits, before.hits + 1);
  again.fill_(2.5f);
  EXPECT_EQ(again.sum().item<double>(), 2.5 * 4 * 1024 * 1024);
  // A slightly smaller request (within 1/8) takes the same block; a much smaller one does not.
  again.reset();
  at::Tensor close = at::empty({4 * 1024 * 1024 - 100000}, at::kFloat);
  EXPECT_EQ(close.data_ptr(), first);
  close.reset();
  at::Tensor far = at::empty({1024 * 1024}, at::kFloat);
  EXPECT_NE(far.data_ptr(), first);
  // Small tensors are plain malloc and 64-byte aligned, as with c10's default allocator.
  at::Tensor small = at::empty({3}, at::kFloat);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(small.data_ptr()) % 64, 0u);
}

TEST(CpuAllocatorTest, CacheStaysWithinItsBoundAndEmptiesOnRequest) {
  install_caching_cpu_allocator(40 * kMiB);
  {
    std::vector<at::Tensor> many;
    for (int i = 0; i < 8; ++i) many.push_back(at::ones({4 * 1024 * 1024}, at::kFloat));  // 8 x 16 MiB
  }
  EXPECT_LE(caching_cpu_allocator_stats().cached_bytes, 40 * kMiB);
  EXPECT_GE(caching_cpu_allocator_stats().cached_bytes, 32 * kMiB);
  install_caching_cpu_allocator(16 * kMiB);  // lowering the bound gives the excess back now
  EXPECT_LE(caching_cpu_allocator_stats().cached_bytes, 16 * kMiB);
  release_cached_cpu_blocks();
  EXPECT_EQ(caching_cpu_allocator_stats().cached_bytes, 0u);
  // Still usable afterwards.
  at::Tensor t = at::full({2 * 1024 * 1024}, 3.0f);
  EXPECT_EQ(t.sum().item<double>(), 6.0 * 1024 * 1024);
}

TEST(CpuAllocatorTest, RawInterfaceWorksForSmallAndLargeBlocks) {
  install_caching_cpu_allocator(64 * kMiB);
  c10::Allocator* a = c10::GetCPUAllocator();
  for (size_t n : {size_t(1), size_t(4096), 3 * kMiB, 20 * kMiB}) {
    void* p = a->raw_allocate(n);
    ASSERT_NE(p, nullptr);
    static_cast<unsigned char*>(p)[0] = 7;
    static_cast<unsigned char*>(p)[n - 1] = 9;
    a->raw_deallocate(p);
  }
}

TEST(CpuAllocatorTest, NetworkTrainsTheSameOnIt) {
  // The RD4AD student's forward and backward (oneDNN convolutions allocate through the raw
  // interface) give the same numbers with and without the cache.
  auto run = [] {
    Network net = make_reverse_student(Arch::kResNet18, 3);
    net.train(true);
    at::manual_seed(0);
    std::vector<at::Tensor> in = {at::rand({2, 64, 32, 32}), at::rand({2, 128, 16, 16}), at::rand({2, 256, 8, 8})};
    auto out = net.forward(in);
    (out[0].mean() + out[1].pow(2).mean() + out[2].abs().mean()).backward();
    return std::make_pair(out[0].detach().clone(), net.parameters()[0].grad().clone());
  };
  auto plain = run();
  install_caching_cpu_allocator(512 * kMiB);
  auto cached = run();
  auto cached_again = run();  // now from reused blocks
  EXPECT_TRUE(plain.first.equal(cached.first));
  EXPECT_TRUE(plain.second.equal(cached.second));
  EXPECT_TRUE(plain.first.equal(cached_again.first));
  EXPECT_TRUE(plain.second.equal(cached_again.second));
  EXPECT_GT(caching_cpu_allocator_stats().hits, 0u);
}

TEST(CpuAllocatorTest, ThreadsAllocatingAndFreeingAtOnce) {
  install_caching_cpu_allocator(64 * kMiB);
  std::vector<std::thread> threads;
  std::vector<int> bad(4, 0);
  for (int k = 0; k < 4; ++k)
    threads.emplace_back([k, &bad] {
      for (int i = 0; i < 200; ++i) {
        const int64_t n = (256 + 64 * ((i + k) % 5)) * 1024;  // 1-2 MiB of floats, five sizes
        at::Tensor t = at::full({n}, float(k * 1000 + i));
        at::Tensor u = t + 1;  // another large block while t is alive
        if (u[n - 1].item<float>() != float(k * 1000 + i + 1)) ++bad[k];
      }
    });
  for (auto& t : threads) t.join();
  for (int k = 0; k < 4; ++k) EXPECT_EQ(bad[k], 0) << "thread " << k;
  EXPECT_LE(caching_cpu_allocator_stats().cached_bytes, 64 * kMiB);
}

// FMAM_CPU_CACHE_MB: MiB, 0 = off, unset or empty = the command's default; anything else is an
// error naming the variable, not a silent 0.
TEST(CpuAllocatorTest, BoundFromTheEnvironment) {
  const char* before = std::getenv("FMAM_CPU_CACHE_MB");
  const std::string saved = before ? before : "";
  unsetenv("FMAM_CPU_CACHE_MB");
  EXPECT_EQ(cpu_cache_bound_from_env(256), size_t(256) << 20);
  setenv("FMAM_CPU_CACHE_MB", "", 1);
  EXPECT_EQ(cpu_cache_bound_from_env(2048), size_t(2048) << 20);
  setenv("FMAM_CPU_CACHE_MB", "0", 1);
  EXPECT_EQ(cpu_cache_bound_from_env(256), 0u);
  EXPECT_EQ(install_caching_cpu_allocator_from_env(256), 0u);  // 0: nothing installed or changed
  setenv("FMAM_CPU_CACHE_MB", "12", 1);
  EXPECT_EQ(cpu_cache_bound_from_env(256), size_t(12) << 20);
  for (const char* bad : {"abc", "-1", "12x", "1048577", "99999999999999999999"}) {
    setenv("FMAM_CPU_CACHE_MB", bad, 1);
    try {
      cpu_cache_bound_from_env(256);
      ADD_FAILURE() << bad << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("FMAM_CPU_CACHE_MB"), std::string::npos) << e.what();
    }
  }
  if (before)
    setenv("FMAM_CPU_CACHE_MB", saved.c_str(), 1);
  else
    unsetenv("FMAM_CPU_CACHE_MB");
}

}  // namespace
}  // namespace fmam
