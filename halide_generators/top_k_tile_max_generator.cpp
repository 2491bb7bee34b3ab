// The Halide half of TopKScore's exact top-k mean: the maximum of every 16-pixel column segment
// ("tile": pixel (x, 16 ty) .. (x, 16 ty + 15)) of the anomaly map, as an order-preserving 32-bit
// key (all bits of a negative float flipped, the sign bit of a positive one set; unsigned key
// order = float order, positive NaNs above +inf). The C++ finish (nodes/top_k_score_node.cpp)
// takes the k-th largest tile maximum M: at least k pixels are >= M, so every pixel of the top k
// lies in a tile whose maximum is >= M, and only those ~k tiles (~16 k pixels) are searched.
#include "Halide.h"

namespace {

using namespace Halide;

class TopKTileMax : public Halide::Generator<TopKTileMax> {
 public:
  static constexpr int kTile = 16;  // rows per tile (keep in step with the node)

  Input<Buffer<float>> input{"input", 2};            // (x, y) = (column, row)
  Output<Buffer<uint32_t>> tile_max{"tile_max", 2};  // (x, ty), ty < ceil(rows / kTile)

  void generate() {
    input.dim(0).set_min(0);
    input.dim(1).set_min(0);
    Expr bits = reinterpret<uint32_t>(input(x_, y_));
    key_(x_, y_) = select((bits >> 31) != 0, ~bits, bits | Internal::make_const(UInt(32), 0x80000000u));
    // Rows past the last one repeat it, which leaves the maximum unchanged.
    Expr last = input.dim(1).extent() - 1;
    Expr m = key_(x_, min(ty_ * kTile, last));
    for (int r = 1; r < kTile; ++r) m = max(m, key_(x_, min(ty_ * kTile + r, last)));
    tile_max(x_, ty_) = m;

    input.set_estimates({{0, 256}, {0, 256}});
    tile_max.set_estimates({{0, 256}, {0, 256 / kTile}});

    if (auto_schedule) {
      // Halide 14 spelling of using_autoscheduler(): leave everything to the autoscheduler.
    } else if (get_target().has_gpu_feature()) {
      // One thread per tile, 64 x 4 tiles per block. Untimed: no GPU on the build machine
      // (2026-11).
      Var xo("xo"), yo("yo"), xi("xi"), yi("yi");
      tile_max.gpu_tile(x_, ty_, xo, yo, xi, yi, 64, 4);
    } else {
      // CPU: a tile row is 16 dense row loads and 15 unsigned maxima per 16-lane vector; rows
      // of tiles in groups of 4 over the TBB workers. 256x256: 0.006 ms, 1 thread, AMD EPYC
      // (Zen 4, AVX-512), 2026-11 (the whole node, finish included: see
      // nodes/top_k_score_node.h).
      Var tyo("tyo"), tyi("tyi");
      tile_max.split(ty_, tyo, tyi, 4, TailStrategy::GuardWithIf)
          .parallel(tyo)
          .vectorize(x_, natural_vector_size<float>(), TailStrategy::GuardWithIf);
    }
  }

 private:
  Var x_{"x"}, y_{"y"}, ty_{"ty"};
  Func key_{"key"};
};

}  // namespace

HALIDE_REGISTER_GENERATOR(TopKTileMax, top_k_tile_max)
