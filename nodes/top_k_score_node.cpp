#include "nodes/top_k_score_node.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <vector>

#include "nodes/halide_support.h"
#include "top_k_tile_max_cpu.h"
#ifdef FMAM_HALIDE_CUDA
#include "top_k_tile_max_cuda.h"
#endif

namespace fmam {

namespace {

constexpr int kTile = 16;  // rows per tile, as in halide_generators/top_k_tile_max_generator.cpp

// The generator's order-preserving key: unsigned order of keys = numeric order of floats, with
// positive NaNs above +inf and negative NaNs below -inf. Selecting on keys keeps the order total.
inline uint32_t key_of(float v) {
  uint32_t b;
  std::memcpy(&b, &v, 4);
  return (b >> 31) ? ~b : (b | 0x80000000u);
}
inline float value_of(uint32_t key) {
  uint32_t b = (key >> 31) ? (key & 0x7fffffffu) : ~key;
  float v;
  std::memcpy(&v, &b, 4);
  return v;
}

}  // namespace

Shapes TopKScoreNode::infer(const Params&, const Shapes& in) {
  const Shape& s = in.at(kIn);
  if (s.known && s.dims.size() != 2) throw PortError("input", kIn.name, "expected a 2-D map [H, W], got " + s.str());
  return {{kOut, Shape::of({})}};
}

double TopKScoreNode::top_k_mean(const cv::Mat& map, int k, Device device) {
  if (map.empty()) throw PortError("input", kIn.name, "is empty");
  if (map.type() != CV_32FC1)
    throw PortError("input", kIn.name, "expected HxW float32 (CV_32FC1), got OpenCV type " + std::to_string(map.type()));
  FMAM_CHECK(k >= 1) << "k must be at least 1, got " << k;
  const int w = map.cols, h = map.rows, tile_rows = (h + kTile - 1) / kTile;
  const int64_t kk = std::min<int64_t>(k, int64_t(w) * h);  // k > pixels: every pixel

  // Halide-allocated (128-byte aligned, as Halide assumes of the outputs it writes with
  // aligned vector stores).
  Halide::Runtime::Buffer<uint32_t> tiles(w, tile_rows);
  auto cpu = [&](void* uc) {
    auto in = hl::view(map);
    return top_k_tile_max_cpu(uc, in, tiles);
  };
  hl::KernelCall cuda;
#ifdef FMAM_HALIDE_CUDA
  cuda = [&](void* uc) {
    auto in = hl::view(map);
    in.set_host_dirty();
    int s = top_k_tile_max_cuda(uc, in, tiles);
    int f = hl::finish_cuda(uc, tiles, in);
    return s ? s : f;
  };
#endif
  hl::run("top_k_tile_max", device, cpu, cuda);

  // M = the kk-th largest tile maximum (the smallest one when there are fewer tiles than kk).
  // At least kk pixels are >= M, so the kk-th largest pixel is >= M too, and every pixel of the
  // top-kk multiset sits in a tile whose maximum is >= M: those tiles' pixels are the candidates.
  std::vector<uint32_t> maxima(tiles.data(), tiles.data() + tiles.number_of_elements());
  const size_t kt = size_t(std::min<int64_t>(kk, int64_t(maxima.size())));
  std::nth_element(maxima.begin(), maxima.begin() + (kt - 1), maxima.end(), std::greater<uint32_t>());
  const uint32_t m = maxima[kt - 1];
  std::vector<uint32_t> candidates;
  candidates.reserve(size_t(kTile) * kt + kTile);
  for (int ty = 0; ty < tile_rows; ++ty)
    for (int x = 0; x < w; ++x) {
      if (tiles(x, ty) < m) continue;
      for (int y = ty * kTile; y < std::min(h, (ty + 1) * kTile); ++y) candidates.push_back(key_of(map.ptr<float>(y)[x]));
    }
  FMAM_CHECK(candidates.size() >= size_t(kk)) << "top-k candidates lost: " << candidates.size() << " < " << kk;

  // The largest kk candidates are the top-kk multiset (equal values are taken as often as k
  // still needs; which of two equal keys is taken does not change the sum).
  std::nth_element(candidates.begin(), candidates.begin() + (kk - 1), candidates.end(), std::greater<uint32_t>());
  double sum = 0.0;
  for (int64_t i = 0; i < kk; ++i) {
    const float v = value_of(candidates[size_t(i)]);
    if (std::isnan(v)) throw PortError("input", kIn.name, "has NaN values among its top k");
    sum += v;
  }
  return sum / double(kk);
}

void TopKScoreNode::process(Context& ctx) { kOut(ctx).send(Scalar{top_k_mean(kIn(ctx).get().mat, params_.k, ctx.device())}); }

FMAM_REGISTER_NODE(TopKScoreNode);

}  // namespace fmam
