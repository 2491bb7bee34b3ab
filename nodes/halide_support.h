// Glue between the nodes and their AOT Halide kernels (halide_generators/): one process-wide
// setup of the shared Halide runtime (error handler, parallel loops on TBB), the CPU/CUDA choice
// per call with a one-line CPU fallback, and zero-copy views of cv::Mat memory as Halide buffers.
// Every kernel is compiled with the `user_context` feature; run() hands it a CallContext, so a
// Halide error lands in that call's context (no printing, no abort) and becomes an fmam::Error.
#pragma once

#include <HalideBuffer.h>

#include <functional>
#include <mutex>
#include <opencv2/core/mat.hpp>
#include <string>

#include "framework/node.h"

namespace fmam::hl {

enum class Backend { kCpu, kCuda };

// The user_context of one kernel call: collects what Halide's error handler reports.
class CallContext {
 public:
  void record(const char* message);
  std::string error() const;

 private:
  mutable std::mutex mu_;
  std::string error_;
};

// Installs the runtime hooks once per process (thread-safe; run() calls it).
void install_runtime();

// Whether this build generated CUDA variants (CMake option FMAM_CUDA_KERNELS).
bool cuda_kernels_built();
// Built, and no CUDA call has failed in this process yet. After one failure the process stays on
// the CPU: retrying a missing driver on every frame would cost a dlopen per call.
bool cuda_usable();
// Why CUDA was given up ("" while it has not been).
std::string cuda_fallback_reason();
// Halide parallel loops run through tbb::parallel_for so far (the kernels share TBB's pool).
long long tbb_par_for_calls();

// Runs kernel `name`: `cuda` when `device` is kCuda and cuda_usable(), else `cpu`. Each callable
// builds its own buffers, calls the kernel with the user_context it is given and returns the
// kernel's status. A failed CUDA call writes one line to stderr (once per process), disables
// CUDA and reruns on the CPU; a failed CPU call throws Error naming the kernel and Halide's
// message. Returns the backend that produced the result.
using KernelCall = std::function<int(void* user_context)>;
Backend run(const char* name, Device device, const KernelCall& cpu, const KernelCall& cuda);

// A view of an HxW CV_32FC1 map as a 2-D Halide buffer: dim 0 = x (column), dim 1 = y (row).
// The mutable one is for outputs and must start 64-byte aligned (a fresh cv::Mat does).
Halide::Runtime::Buffer<float> view(cv::Mat& map);
Halide::Runtime::Buffer<const float> view(const cv::Mat& map);
// A view of `height` rows of `width` floats, `row_stride` floats apart.
Halide::Runtime::Buffer<const float> view(const float* data, int width, int height, int row_stride);

// After a CUDA call: outputs back to the host, device memory of every buffer released.
template <class... Buffers>
int finish_cuda(void* user_context, Buffers&... buffers) {
  int status = 0;
  auto one = [&status, user_context](auto& b) {
    if (status == 0 && b.device_dirty()) status = b.copy_to_host(user_context);
    if (b.has_device_allocation()) {
      int s = b.device_free(user_context);
      if (status == 0) status = s;
    }
  };
  (one(buffers), ...);
  return status;
}

}  // namespace fmam::hl
