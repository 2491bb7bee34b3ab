#include "nodes/perlin.h"

#include <cmath>

#include "framework/error.h"

namespace fmam {

namespace {
double fade(double t) { return t * t * t * (t * (t * 6.0 - 15.0) + 10.0); }
double lerp(double a, double b, double w) { return (b - a) * w + a; }  // DRAEM's lerp_np order

// Cell index, offset in the cell and faded offset of each of n pixels over res cells.
struct Axis {
  std::vector<int> cell;
  std::vector<double> off, t;
  Axis(int n, int res) : cell(n), off(n), t(n) {
    for (int i = 0; i < n; ++i) {
      // i * res / n exactly as a fraction, so power-of-two sizes reproduce DRAEM bit for bit.
      const long long num = (long long)i * res;
      cell[i] = int(num / n);
      off[i] = double(num - (long long)cell[i] * n) / n;
      t[i] = fade(off[i]);
    }
  }
};
}  // namespace

cv::Mat perlin_2d(cv::Size size, int res_y, int res_x, const std::vector<double>& angles) {
  FMAM_CHECK(size.width > 0 && size.height > 0) << "perlin_2d: empty size";
  FMAM_CHECK(res_y >= 1 && res_x >= 1) << "perlin_2d: res must be >= 1, got " << res_y << "x" << res_x;
  const int gw = res_x + 1;
  FMAM_CHECK(angles.size() == size_t(res_y + 1) * gw)
      << "perlin_2d: expected " << (res_y + 1) * gw << " angles, got " << angles.size();
  std::vector<double> gc(angles.size()), gs(angles.size());
  for (size_t i = 0; i < angles.size(); ++i) {
    gc[i] = std::cos(angles[i]);
    gs[i] = std::sin(angles[i]);
  }
  const Axis ay(size.height, res_y), ax(size.width, res_x);
  const double kSqrt2 = std::sqrt(2.0);
  cv::Mat out(size, CV_32FC1);
  for (int y = 0; y < size.height; ++y) {
    float* row = out.ptr<float>(y);
    const int i = ay.cell[y];
    const double a = ay.off[y], ta = ay.t[y];
    const double* c0 = &gc[size_t(i) * gw];
    const double* s0 = &gs[size_t(i) * gw];
    const double* c1 = c0 + gw;
    const double* s1 = s0 + gw;
    for (int x = 0; x < size.width; ++x) {
      const int j = ax.cell[x];
      const double b = ax.off[x], tb = ax.t[x];
      // Dot products of the four corner gradients with the offsets to those corners.
      const double n00 = a * c0[j] + b * s0[j];
      const double n10 = (a - 1) * c1[j] + b * s1[j];
      const double n01 = a * c0[j + 1] + (b - 1) * s0[j + 1];
      const double n11 = (a - 1) * c1[j + 1] + (b - 1) * s1[j + 1];
      row[x] = float(kSqrt2 * lerp(lerp(n00, n10, ta), lerp(n01, n11, ta), tb));
    }
  }
  return out;
}

}  // namespace fmam
