// Reference Perlin noise: a line-by-line port of DRAEM's rand_perlin_2d_np (perlin.py), arrays
// and all: grid = np.mgrid[0:res0:delta0, 0:res1:delta1] % 1, gradients tiled with np.repeat
// (so shape must be a multiple of res, as in DRAEM), four dot products, fade, two lerps, sqrt(2).
// The angles are given instead of drawn (np.random.rand(res0 + 1, res1 + 1) * 2 pi).
#pragma once

#include <cmath>
#include <opencv2/core/mat.hpp>
#include <vector>

namespace fmam::reference {

inline cv::Mat RandPerlin2dNp(int shape0, int shape1, int res0, int res1, const std::vector<double>& angles) {
  auto fade = [](double t) { return 6 * std::pow(t, 5) - 15 * std::pow(t, 4) + 10 * std::pow(t, 3); };
  auto lerp_np = [](double x, double y, double w) { return (y - x) * w + x; };
  const double delta0 = double(res0) / shape0, delta1 = double(res1) / shape1;
  const int d0 = shape0 / res0, d1 = shape1 / res1;
  // grid[..., 0], grid[..., 1]
  std::vector<double> g0(size_t(shape0) * shape1), g1(g0.size());
  for (int i = 0; i < shape0; ++i)
    for (int j = 0; j < shape1; ++j) {
      g0[size_t(i) * shape1 + j] = std::fmod(0.0 + i * delta0, 1.0);
      g1[size_t(i) * shape1 + j] = std::fmod(0.0 + j * delta1, 1.0);
    }
  auto grad = [&](int a, int b, int c) {  // gradients[a, b, c]
    const double ang = angles[size_t(a) * (res1 + 1) + b];
    return c == 0 ? std::cos(ang) : std::sin(ang);
  };
  // tile_grads(slice1, slice2)[i, j, c] = gradients[s1 + i // d0, s2 + j // d1, c]
  auto tile = [&](int s1, int s2, int i, int j, int c) { return grad(s1 + i / d0, s2 + j / d1, c); };
  auto dot = [&](int s1, int s2, double shift0, double shift1, int i, int j) {
    const size_t k = size_t(i) * shape1 + j;
    return (g0[k] + shift0) * tile(s1, s2, i, j, 0) + (g1[k] + shift1) * tile(s1, s2, i, j, 1);
  };
  cv::Mat out(shape0, shape1, CV_64FC1);
  for (int i = 0; i < shape0; ++i)
    for (int j = 0; j < shape1; ++j) {
      const double n00 = dot(0, 0, 0, 0, i, j);
      const double n10 = dot(1, 0, -1, 0, i, j);
      const double n01 = dot(0, 1, 0, -1, i, j);
      const double n11 = dot(1, 1, -1, -1, i, j);
      const size_t k = size_t(i) * shape1 + j;
      const double t0 = fade(g0[k]), t1 = fade(g1[k]);
      out.at<double>(i, j) = std::sqrt(2.0) * lerp_np(lerp_np(n00, n10, t0), lerp_np(n01, n11, t0), t1);
    }
  return out;
}

}  // namespace fmam::reference
