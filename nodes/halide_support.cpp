// The Halide runtime is one per process (the kernels link one shared runtime object), so its
// hooks are set here once. Not a node: it includes TBB because the runtime's thread pool is
// replaced by TBB's, and it may print, once, when CUDA is unavailable.
#include "nodes/halide_support.h"

#include <HalideRuntime.h>
#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/task_arena.h>

#include <atomic>
#include <cstdint>
#include <iostream>

namespace fmam::hl {

namespace {

std::atomic<long long> g_par_for_calls{0};
std::atomic<bool> g_cuda_failed{false};
std::mutex g_reason_mu;
std::string g_reason;

// Errors raised without a user_context (none of our calls do that; kept for safety).
thread_local std::string t_orphan_error;

void on_halide_error(void* user_context, const char* message) {
  if (user_context)
    static_cast<CallContext*>(user_context)->record(message);
  else
    t_orphan_error = message ? message : "";
}

// Halide's parallel loops on TBB's workers, so the flow graph, OpenCV and the kernels share one
// pool instead of oversubscribing 2 cores with a second one (ENVIRONMENT.md: 10-40%). A simple
// partitioner with grain 1 keeps Halide's own task granularity (one task per strip). Isolated:
// a thread waiting for its strips must not pick up another frame's node body meanwhile (that
// would stall this kernel behind a whole node).
int tbb_do_par_for(void* user_context, halide_task_t task, int min, int size, uint8_t* closure) {
  g_par_for_calls.fetch_add(1, std::memory_order_relaxed);
  std::atomic<int> status{0};
  tbb::this_task_arena::isolate([&] {
    tbb::parallel_for(
        tbb::blocked_range<int>(min, min + size, 1),
        [&](const tbb::blocked_range<int>& r) {
          for (int i = r.begin(); i != r.end(); ++i) {
            if (status.load(std::memory_order_relaxed) != 0) return;
            int s = task(user_context, i, closure);
            int ok = 0;
            if (s != 0) status.compare_exchange_strong(ok, s);
          }
        },
        tbb::simple_partitioner());
  });
  return status.load();
}

std::string describe_failure(const CallContext& ctx, int status) {
  std::string e = ctx.error();
  if (e.empty()) e = t_orphan_error;
  while (!e.empty() && (e.back() == '\n' || e.back() == ' ')) e.pop_back();
  return e.empty() ? "Halide error code " + std::to_string(status) : e;
}

}  // namespace

void CallContext::record(const char* message) {
  std::lock_guard<std::mutex> lock(mu_);
  // The first message is the cause; later ones (a missing libcuda reports every entry point it
  // looked for) only repeat it.
  if (error_.empty() && message) error_ = message;
}

std::string CallContext::error() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

void install_runtime() {
  static std::once_flag once;
  std::call_once(once, [] {
    halide_set_error_handler(on_halide_error);
    halide_set_custom_do_par_for(tbb_do_par_for);
  });
}

bool cuda_kernels_built() {
#ifdef FMAM_HALIDE_CUDA
  return true;
#else
  return false;
#endif
}

bool cuda_usable() { return cuda_kernels_built() && !g_cuda_failed.load(); }

std::string cuda_fallback_reason() {
  std::lock_guard<std::mutex> lock(g_reason_mu);
  return g_reason;
}

long long tbb_par_for_calls() { return g_par_for_calls.load(); }

Backend run(const char* name, Device device, const KernelCall& cpu, const KernelCall& cuda) {
  install_runtime();
  if (device == Device::kCuda && cuda_usable() && cuda) {
    CallContext ctx;
    t_orphan_error.clear();
    int status = cuda(&ctx);
    if (status == 0) return Backend::kCuda;
    std::string why = describe_failure(ctx, status);
    bool first = false;
    {
      std::lock_guard<std::mutex> lock(g_reason_mu);
      if (g_reason.empty()) {
        g_reason = std::string("kernel ") + name + ": " + why;
        first = true;
      }
    }
    g_cuda_failed.store(true);
    if (first) std::cerr << "fmam: CUDA Halide kernels unavailable (" << name << ": " << why << "); running them on the CPU\n";
  } else if (device == Device::kCuda && !cuda_kernels_built()) {
    static std::once_flag once;
    std::call_once(once, [] {
      std::cerr << "fmam: built without CUDA Halide kernels (FMAM_CUDA_KERNELS=OFF); running "
                   "them on the CPU\n";
    });
  }
  CallContext ctx;
  t_orphan_error.clear();
  int status = cpu(&ctx);
  FMAM_CHECK(status == 0) << "Halide kernel " << name << " failed: " << describe_failure(ctx, status);
  return Backend::kCpu;
}

Halide::Runtime::Buffer<float> view(cv::Mat& map) {
  FMAM_CHECK(map.type() == CV_32FC1) << "expected a CV_32FC1 map, got OpenCV type " << map.type();
  // Halide 14 treats an output it reads back like its own allocations (vector-aligned); cv::Mat
  // allocates 64-byte aligned, which is what AVX-512 needs.
  FMAM_CHECK(reinterpret_cast<uintptr_t>(map.data) % 64 == 0) << "output map memory is not 64-byte aligned";
  halide_dimension_t dims[2] = {{0, map.cols, 1}, {0, map.rows, int32_t(map.step1())}};
  return Halide::Runtime::Buffer<float>(map.ptr<float>(), 2, dims);
}

Halide::Runtime::Buffer<const float> view(const cv::Mat& map) {
  FMAM_CHECK(map.type() == CV_32FC1) << "expected a CV_32FC1 map, got OpenCV type " << map.type();
  return view(map.ptr<float>(), map.cols, map.rows, int(map.step1()));
}

Halide::Runtime::Buffer<const float> view(const float* data, int width, int height, int row_stride) {
  halide_dimension_t dims[2] = {{0, width, 1}, {0, height, row_stride}};
  return Halide::Runtime::Buffer<const float>(data, 2, dims);
}

}  // namespace fmam::hl
