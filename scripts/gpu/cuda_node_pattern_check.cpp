// The post-processing chain of one frame, CUDA against CPU, called the way fmam's nodes call the
// kernels (nodes/upsample_sum_node.cpp, gaussian_blur_node.cpp, top_k_score_node.cpp): host maps
// in, host maps out, so every call pays its copies to and from the GPU and frees its device
// memory. Two parts:
//  1. each kernel alone against its CPU twin, inputs marked host-dirty as the nodes mark them
//     (../shared/tools/halide_cuda_check.cpp fills its inputs with for_each_value, which does not
//     mark them, so its GPU runs read uninitialised device memory: see docs/PERFORMANCE.md), timed
//     device-resident and with the nodes' host round trips;
//  2. one frame's chain at output size n x n: three levels (n/4, n/8, n/16, a ResNet pyramid)
//     upsampled and summed into two ping-ponged accumulators, the sigma=4 blur, the top-k tile
//     maxima: does `--device cuda` give the same map and score, and is it faster at these sizes?
// Built by scripts/gpu/build_cuda_checks.sh; needs only libcuda at run time.
#include <HalideBuffer.h>
#include <HalideRuntime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <random>
#include <vector>

#include "gaussian_blur_cpu.h"
#include "gaussian_blur_cuda.h"
#include "top_k_tile_max_cpu.h"
#include "top_k_tile_max_cuda.h"
#include "upsample_add_cpu.h"
#include "upsample_add_cuda.h"

using Halide::Runtime::Buffer;

namespace {

constexpr int kTileRows = 16;  // top_k_tile_max's tile height (nodes/top_k_score_node.cpp kTile)

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

struct Frame {
  std::vector<Buffer<float>> levels;  // n/4, n/8, n/16 squares
};

struct Result {
  Buffer<float> map;       // the blurred sum, n x n
  Buffer<uint32_t> tiles;  // per-tile maxima (order-preserving bits)
};

Buffer<float> random_map(int w, int h, unsigned seed);

Frame make_frame(int n, unsigned seed) {
  Frame f;
  for (int d : {4, 8, 16}) f.levels.push_back(random_map(n / d, n / d, seed + unsigned(d)));
  return f;
}

// After a CUDA call the nodes copy device-dirty outputs back and free every device allocation.
template <class B>
int finish(B& b) {
  int s = b.device_dirty() ? b.copy_to_host() : 0;
  if (b.has_device_allocation()) {
    int f = b.device_free();
    if (s == 0) s = f;
  }
  return s;
}

int run_chain(bool cuda, Frame& f, int n, Result& r) {
  Buffer<float> acc[2] = {Buffer<float>(n, n), Buffer<float>(n, n)};
  acc[0].fill(0.0f);
  int s = 0;
  if (cuda) acc[0].set_host_dirty();
  for (size_t j = 0; j < f.levels.size() && s == 0; ++j) {
    Buffer<float>& in = f.levels[j];
    Buffer<float>& a = acc[j % 2];
    Buffer<float>& o = acc[(j + 1) % 2];
    if (cuda) {
      in.set_host_dirty();
      s = upsample_add_cuda(nullptr, in, a, true, false, o);
      if (s == 0) s = finish(in);
    } else {
      s = upsample_add_cpu(nullptr, in, a, true, false, o);
    }
  }
  Buffer<float>& sum = acc[f.levels.size() % 2];
  if (cuda && s == 0) s = finish(acc[0]) | finish(acc[1]);
  if (s) return s;
  if (cuda) {
    sum.set_host_dirty();
    s = gaussian_blur_cuda(nullptr, sum, 4.0f, r.map);
    if (s == 0) s = finish(r.map) | finish(sum);
  } else {
    s = gaussian_blur_cpu(nullptr, sum, 4.0f, r.map);
  }
  if (s) return s;
  if (cuda) {
    r.map.set_host_dirty();
    s = top_k_tile_max_cuda(nullptr, r.map, r.tiles);
    if (s == 0) s = finish(r.tiles) | finish(r.map);
  } else {
    s = top_k_tile_max_cpu(nullptr, r.map, r.tiles);
  }
  return s;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <class Fn>
double median_ms(int reps, Fn&& fn) {
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    double t0 = now();
    fn();
    t.push_back(now() - t0);
  }
  return median(t) * 1e3;
}

Buffer<float> random_map(int w, int h, unsigned seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(0, 1);
  Buffer<float> b(w, h);
  b.for_each_value([&](float& v) { v = u(g); });
  b.set_host_dirty();  // for_each_value writes through pointers and does not mark the buffer
  return b;
}

double max_abs_diff(Buffer<float>& a, Buffer<float>& b) {
  double m = 0;
  a.for_each_element([&](int x, int y) { m = std::max(m, double(std::fabs(a(x, y) - b(x, y)))); });
  return m;
}

// Part 1. A kernel alone: `cpu` and `cuda` each run it once into their own output; `resident`
// reruns the CUDA one with the data already on the GPU. Returns the failing checks.
int check_blur(int n) {
  Buffer<float> in = random_map(n, n, unsigned(n)), oc(n, n), og(n, n);
  int r1 = gaussian_blur_cpu(nullptr, in, 4.f, oc);
  int r2 = gaussian_blur_cuda(nullptr, in, 4.f, og);
  r2 = r2 ? r2 : og.copy_to_host();
  double d = max_abs_diff(oc, og);
  const int reps = n >= 4096 ? 10 : 50;
  double t_cpu = median_ms(reps, [&] { gaussian_blur_cpu(nullptr, in, 4.f, oc); });
  double t_res = median_ms(reps, [&] {
    gaussian_blur_cuda(nullptr, in, 4.f, og);
    og.device_sync();
  });
  finish(og);
  finish(in);
  double t_trip = median_ms(reps, [&] {
    in.set_host_dirty();
    gaussian_blur_cuda(nullptr, in, 4.f, og);
    finish(og);
    finish(in);
  });
  std::printf(
      "gaussian_blur %dx%d: rc cpu %d cuda %d, max|diff| %.3g; median ms: cpu %.3f, cuda resident %.3f, "
      "cuda with round trips %.3f\n",
      n, n, r1, r2, d, t_cpu, t_res, t_trip);
  return (r1 != 0) + (r2 != 0) + (d > 1e-4);
}

int check_upsample(int n) {
  const int s = n / 4;
  int fails = 0;
  for (int align : {0, 1})
    for (int mul : {0, 1}) {
      Buffer<float> lv = random_map(s, s, 7), acc = random_map(n, n, 8), oc(n, n), og(n, n);
      int r1 = upsample_add_cpu(nullptr, lv, acc, align, mul, oc);
      int r2 = upsample_add_cuda(nullptr, lv, acc, align, mul, og);
      r2 = r2 ? r2 : og.copy_to_host();
      double d = max_abs_diff(oc, og);
      std::printf("upsample_add %d->%d align %d mul %d: rc %d %d, max|diff| %.3g\n", s, n, align, mul, r1, r2, d);
      fails += (r1 != 0) + (r2 != 0) + (d > 1e-5);
    }
  return fails;
}

int check_top_k(int n) {
  Buffer<float> in = random_map(n, n + 7, 3);
  in(5, 9) = NAN;  // the kernel orders NaN and -inf like the CPU one (nodes reject NaN maps earlier)
  in(11, 2) = -INFINITY;
  const int tile_rows = (n + 7 + kTileRows - 1) / kTileRows;
  Buffer<uint32_t> tc(n, tile_rows), tg(n, tile_rows);
  int r1 = top_k_tile_max_cpu(nullptr, in, tc);
  int r2 = top_k_tile_max_cuda(nullptr, in, tg);
  r2 = r2 ? r2 : tg.copy_to_host();
  long bad = 0;
  tc.for_each_element([&](int x, int y) { bad += tc(x, y) != tg(x, y); });
  std::printf("top_k_tile_max %dx%d: rc %d %d, mismatching tiles %ld of %d\n", n, n + 7, r1, r2, bad, n * tile_rows);
  return (r1 != 0) + (r2 != 0) + (bad != 0);
}

// The image score the way TopKScore defines it: the mean of the k largest pixels (k = 1 %).
double top_k_mean(Buffer<float>& map) {
  std::vector<float> v(map.data(), map.data() + map.number_of_elements());
  const size_t k = std::max<size_t>(1, v.size() / 100);
  std::nth_element(v.begin(), v.begin() + k, v.end(), std::greater<float>());
  double sum = 0;
  for (size_t i = 0; i < k; ++i) sum += v[i];
  return sum / double(k);
}

// Part 2. One frame's chain. The tiles of the GPU's map are compared with the CPU kernel's tiles
// of that same map (bit-exact): the maps themselves differ in the last bits (float sums in
// another order), and a tile maximum one ulp apart is a different key.
int check_chain(int n) {
  Frame f = make_frame(n, unsigned(n));
  const int tile_rows = (n + kTileRows - 1) / kTileRows;
  Result cpu{Buffer<float>(n, n), Buffer<uint32_t>(n, tile_rows)};
  Result gpu{Buffer<float>(n, n), Buffer<uint32_t>(n, tile_rows)};
  int rc_cpu = run_chain(false, f, n, cpu);
  int rc_gpu = run_chain(true, f, n, gpu);
  double diff = max_abs_diff(cpu.map, gpu.map);
  double score_diff = std::fabs(top_k_mean(cpu.map) - top_k_mean(gpu.map));
  Buffer<uint32_t> tiles_of_gpu_map(n, tile_rows);
  top_k_tile_max_cpu(nullptr, gpu.map, tiles_of_gpu_map);
  long bad_tiles = 0;
  gpu.tiles.for_each_element([&](int x, int y) { bad_tiles += gpu.tiles(x, y) != tiles_of_gpu_map(x, y); });

  const int frames = n >= 2048 ? 10 : 50;
  std::vector<double> t_cpu, t_gpu;
  for (int i = 0; i < frames; ++i) {  // alternated, so clocks and caches treat both alike
    double t0 = now();
    run_chain(false, f, n, cpu);
    t_cpu.push_back(now() - t0);
    t0 = now();
    run_chain(true, f, n, gpu);
    t_gpu.push_back(now() - t0);
  }
  std::printf(
      "chain %4dx%-4d: rc cpu %d cuda %d, map max|diff| %.3g, score |diff| %.3g, tiles differing from the "
      "CPU kernel's on the same map %ld of %d; per frame median cpu %.3f ms, cuda %.3f ms (round trips), "
      "cuda/cpu %.2f\n",
      n, n, rc_cpu, rc_gpu, diff, score_diff, bad_tiles, n * tile_rows, median(t_cpu) * 1e3, median(t_gpu) * 1e3,
      median(t_gpu) / median(t_cpu));
  return (rc_cpu != 0) + (rc_gpu != 0) + (diff > 1e-4) + (score_diff > 1e-5) + (bad_tiles != 0);
}

}  // namespace

int main() {
  int fails = 0;
  for (int n : {256, 1024, 4096}) fails += check_blur(n);
  for (int n : {256, 1024}) fails += check_upsample(n);
  for (int n : {256, 1000, 4096}) fails += check_top_k(n);
  for (int n : {256, 512, 1024, 2048}) fails += check_chain(n);
  std::printf("%s: %d failing checks\n", fails ? "FAIL" : "OK", fails);
  return fails != 0;
}
