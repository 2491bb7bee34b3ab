// One level of Eq. 8: output = accum (+ or *) bilinear_upsample(input) to accum's size. The node
// calls it once per pyramid level, ping-ponging two accumulators (0 for add, 1 for multiply).
// Bilinear exactly as torch.nn.functional.interpolate(mode="bilinear") computes it in float32:
//   align_corners = true:  src = dst * (in - 1) / (out - 1)         (0 when out == 1)
//   align_corners = false: src = max((dst + 0.5) * in / out - 0.5, 0)
//   i0 = floor(src), i1 = min(i0 + 1, in - 1), l1 = src - i0, value = (1 - l1) v[i0] + l1 v[i1],
// blended along the row first, then across rows, as torch does:
//   (1 - ly) ((1 - lx) v00 + lx v01) + ly ((1 - lx) v10 + lx v11).
#include "Halide.h"

namespace {

using namespace Halide;

class UpsampleAdd : public Halide::Generator<UpsampleAdd> {
 public:
  Input<Buffer<float>> input{"input", 2};  // one level, (x, y) = (column, row)
  Input<Buffer<float>> accum{"accum", 2};  // the running map at the output size
  Input<bool> align_corners{"align_corners"};
  Input<bool> multiply{"multiply"};           // false: accum + up, true: accum * up
  Output<Buffer<float>> output{"output", 2};  // same size as accum

  void generate() {
    input.dim(0).set_min(0);
    input.dim(1).set_min(0);
    accum.dim(0).set_min(0);
    accum.dim(1).set_min(0);

    // Source coordinate, left tap and weight per output column and per output row.
    coord(src_x_, i0x_, lx_, x_, input.dim(0).extent(), accum.dim(0).extent());
    coord(src_y_, i0y_, ly_, y_, input.dim(1).extent(), accum.dim(1).extent());
    Expr in_w = input.dim(0).extent(), in_h = input.dim(1).extent();
    Expr x0 = i0x_(x_), x1 = min(x0 + 1, in_w - 1), wx1 = lx_(x_), wx0 = 1.0f - wx1;
    Expr y0 = i0y_(y_), y1 = min(y0 + 1, in_h - 1), wy1 = ly_(y_), wy0 = 1.0f - wy1;
    // Separable: each input row resampled to the output width, then rows blended; the same
    // products and sums, in the same order, as the four-tap formula above.
    rows_(x_, y_) = wx0 * input(x0, y_) + wx1 * input(x1, y_);
    up_(x_, y_) = wy0 * rows_(x_, y0) + wy1 * rows_(x_, y1);
    output(x_, y_) = select(multiply, accum(x_, y_) * up_(x_, y_), accum(x_, y_) + up_(x_, y_));

    input.set_estimates({{0, 64}, {0, 64}});
    accum.set_estimates({{0, 256}, {0, 256}});
    align_corners.set_estimate(true);
    multiply.set_estimate(false);
    output.set_estimates({{0, 256}, {0, 256}});

    if (auto_schedule) {
      // Halide 14 spelling of using_autoscheduler(): leave everything to the autoscheduler.
    } else if (get_target().has_gpu_feature()) {
      // One kernel, coordinates recomputed per thread (cheaper than a second launch). Untimed:
      // no GPU on the build machine (2026-11).
      Var xo("xo"), yo("yo"), xi("xi"), yi("yi");
      output.gpu_tile(x_, y_, xo, yo, xi, yi, 32, 8);
    } else {
      // CPU: per-column coordinates once (tiny); output rows in strips of 32 over the TBB
      // workers, 16-wide vectors; per strip, the few input rows it needs are resampled to the
      // output width first (the only gathers), so the blend of rows is dense loads. The row
      // coordinates stay inline so that bounds inference sees which input rows a strip needs
      // (computed at root they would hide it, and every strip would resample every row).
      // 1 thread, AMD EPYC (Zen 4, AVX-512), 2026-11: 64x64 -> 256x256 0.022 ms median, the
      // paper's three levels 0.070 ms (4-tap gathers per pixel: 0.094 ms; row coordinates at
      // root: 0.30 ms for three levels).
      Var yo("yo"), yi("yi");
      const int vec = natural_vector_size<float>();
      for (Func f : {src_x_, i0x_, lx_}) f.compute_root();
      output.split(y_, yo, yi, 32, TailStrategy::GuardWithIf).parallel(yo).vectorize(x_, vec, TailStrategy::GuardWithIf);
      rows_.compute_at(output, yo).vectorize(x_, vec, TailStrategy::GuardWithIf);
    }
  }

 private:
  // src(d): the source coordinate of output index d; i0(d) its floor clamped to the input;
  // l(d) = src - i0, the weight of the right (lower) tap. Float32 throughout, like torch.
  void coord(Func src, Func i0, Func l, Var d, Expr in, Expr out) {
    Expr scale_ac = select(out > 1, cast<float>(in - 1) / cast<float>(max(out - 1, 1)), 0.0f);
    Expr scale = cast<float>(in) / cast<float>(out);
    src(d) = select(align_corners, cast<float>(d) * scale_ac, max((cast<float>(d) + 0.5f) * scale - 0.5f, 0.0f));
    i0(d) = clamp(cast<int>(floor(src(d))), 0, in - 1);
    l(d) = src(d) - cast<float>(i0(d));
  }

  Var x_{"x"}, y_{"y"};
  Func src_x_{"src_x"}, i0x_{"i0x"}, lx_{"lx"}, src_y_{"src_y"}, i0y_{"i0y"}, ly_{"ly"};
  Func rows_{"rows"}, up_{"up"};
};

}  // namespace

HALIDE_REGISTER_GENERATOR(UpsampleAdd, upsample_add)
