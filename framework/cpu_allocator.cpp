#include "framework/cpu_allocator.h"

#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstdlib>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <unordered_map>
#include <vector>

#include "framework/error.h"

namespace fmam {
namespace {

constexpr size_t kMinCached = size_t(1) << 20;  // smaller: plain malloc, as c10's default
constexpr size_t kHuge = size_t(4) << 20;       // from here on: advised for transparent huge pages
constexpr size_t kGranule = size_t(64) << 10;   // sizes are rounded up to 64 KiB

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

class CachingCpuAllocator final : public c10::Allocator {
 public:
  CachingCpuAllocator() = default;

  // Data and context are the same pointer, as raw_allocate()/raw_deallocate() (oneDNN) need.
  c10::DataPtr allocate(size_t n) const override {
    if (n < kMinCached) {
      void* p = nullptr;  // as c10's default: 64-byte aligned, never null
      if (posix_memalign(&p, 64, n > 0 ? n : 64) != 0 || !p) throw std::bad_alloc();
      return {p, p, &std::free, c10::Device(c10::DeviceType::CPU)};
    }
    size_t size = round_up(n, kGranule);
    void* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      // Best fit among the cached blocks of at least `size` and at most 1/8 larger.
      auto it = free_.lower_bound(size);
      while (it != free_.end() && it->second.empty() && it->first <= size + size / 8) ++it;
      if (it != free_.end() && !it->second.empty() && it->first <= size + size / 8) {
        size = it->first;
        p = it->second.back();
        it->second.pop_back();
        stats_.cached_bytes -= size;
        ++stats_.hits;
        live_[p] = size;
      } else {
        ++stats_.misses;
      }
    }
    if (!p) {
      // Straight from the kernel, so that a block given back really leaves (munmap).
      p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();
      if (size >= kHuge) madvise(p, size, MADV_HUGEPAGE);  // a hint; harmless where THP is off
      std::lock_guard<std::mutex> lock(mu_);
      live_[p] = size;
    }
    return {p, p, &CachingCpuAllocator::release, c10::Device(c10::DeviceType::CPU)};
  }

  // Frees what allocate() gave, large or small (raw_deallocate passes small blocks here too).
  c10::DeleterFnPtr raw_deleter() const override { return &CachingCpuAllocator::release; }

  static void release(void* p) {
    if (!p) return;
    CachingCpuAllocator& self = *instance();
    size_t large = 0;  // the size of a large block; small ones come here only via raw_deallocate
    {
      std::lock_guard<std::mutex> lock(self.mu_);
      auto it = self.live_.find(p);
      if (it != self.live_.end()) {
        const size_t size = large = it->second;
        self.live_.erase(it);
        if (self.stats_.cached_bytes + size <= self.max_cached_) {
          self.free_[size].push_back(p);
          self.stats_.cached_bytes += size;
          return;
        }
      }
    }
    if (large)
      munmap(p, large);  // over the bound: back to the system
    else
      std::free(p);
  }

  void set_bound(size_t bytes) {
    std::vector<std::pair<void*, size_t>> drop;
    {
      std::lock_guard<std::mutex> lock(mu_);
      max_cached_ = bytes;
      for (auto& [size, list] : free_)
        while (!list.empty() && stats_.cached_bytes > max_cached_) {
          drop.emplace_back(list.back(), size);
          list.pop_back();
          stats_.cached_bytes -= size;
        }
    }
    for (const auto& [p, size] : drop) munmap(p, size);
  }

  size_t bound() const {
    std::lock_guard<std::mutex> lock(mu_);
    return max_cached_;
  }

  CpuCacheStats stats() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

  // Never destroyed: tensors may be freed during static destruction.
  static CachingCpuAllocator*& instance() {
    static CachingCpuAllocator* a = nullptr;
    return a;
  }

 private:
  mutable std::mutex mu_;
  mutable std::map<size_t, std::vector<void*>> free_;  // size -> free blocks
  mutable std::unordered_map<void*, size_t> live_;     // large blocks in use -> size
  mutable CpuCacheStats stats_;
  size_t max_cached_ = 0;
};

std::mutex g_install_mu;

}  // namespace

void install_caching_cpu_allocator(size_t max_cached_bytes) {
  std::lock_guard<std::mutex> lock(g_install_mu);
  auto*& a = CachingCpuAllocator::instance();
  if (!a) {
    a = new CachingCpuAllocator();
    a->set_bound(max_cached_bytes);
    c10::SetCPUAllocator(a, /*priority=*/1);
    return;
  }
  a->set_bound(max_cached_bytes);
}

size_t cpu_cache_bound_from_env(size_t default_mb) {
  const char* env = std::getenv("FMAM_CPU_CACHE_MB");
  if (!env || !*env) return default_mb << 20;
  char* end = nullptr;
  errno = 0;
  const long long mb = std::strtoll(env, &end, 10);
  FMAM_CHECK(errno == 0 && *end == '\0' && mb >= 0 && mb <= (1 << 20))
      << "FMAM_CPU_CACHE_MB=\"" << env << "\": expected a whole number of MiB in [0, 1048576] (0: no cache)";
  return size_t(mb) << 20;
}

size_t install_caching_cpu_allocator_from_env(size_t default_mb) {
  const size_t bound = cpu_cache_bound_from_env(default_mb);
  if (bound > 0) install_caching_cpu_allocator(bound);
  return bound;
}

void release_cached_cpu_blocks() {
  std::lock_guard<std::mutex> lock(g_install_mu);
  auto* a = CachingCpuAllocator::instance();
  if (!a) return;
  const size_t bound = a->bound();
  a->set_bound(0);
  a->set_bound(bound);
}

bool caching_cpu_allocator_installed() {
  std::lock_guard<std::mutex> lock(g_install_mu);
  return CachingCpuAllocator::instance() != nullptr && c10::GetCPUAllocator() == CachingCpuAllocator::instance();
}

CpuCacheStats caching_cpu_allocator_stats() {
  std::lock_guard<std::mutex> lock(g_install_mu);
  auto* a = CachingCpuAllocator::instance();
  return a ? a->stats() : CpuCacheStats{};
}

}  // namespace fmam
