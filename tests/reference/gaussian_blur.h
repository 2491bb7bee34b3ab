// Reference Gaussian blur: scipy.ndimage.gaussian_filter(x, sigma, mode="reflect", truncate=4.0)
// written out as plain loops in double precision. Not a copy of the Halide kernel: a full 2-D
// pass per axis over an explicitly reflected index, weights straight from the formula. Checked
// once against scipy 1.10 (Debian's /usr/bin/python3) on a 5x7 map for sigma 0.5, 1.3, 4 and 7.25
// (radius 29: reflections beyond the map): max difference 1.2e-7.
#pragma once

#include <cmath>
#include <opencv2/core/mat.hpp>
#include <vector>

namespace fmam::reference {

// scipy: lw = int(truncate * sd + 0.5)
inline int GaussianRadius(double sigma) { return int(4.0 * sigma + 0.5); }

// scipy's 'reflect' (half-sample symmetric): ... c b a | a b c ... | c b a | a b c ...
inline int Reflect(int i, int n) {
  const int period = 2 * n;
  int m = i % period;
  if (m < 0) m += period;
  return m < n ? m : period - 1 - m;
}

inline std::vector<double> GaussianWeights(double sigma) {
  const int r = GaussianRadius(sigma);
  std::vector<double> w(2 * r + 1);
  double total = 0;
  for (int i = -r; i <= r; ++i) total += w[i + r] = std::exp(-0.5 * i * i / (sigma * sigma));
  for (double& v : w) v /= total;
  return w;
}

inline cv::Mat GaussianBlur(const cv::Mat& in, double sigma) {
  const int h = in.rows, w = in.cols, r = GaussianRadius(sigma);
  const std::vector<double> k = GaussianWeights(sigma);
  std::vector<double> rows(size_t(h) * w);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      double s = 0;
      for (int d = -r; d <= r; ++d) s += k[d + r] * in.at<float>(y, Reflect(x + d, w));
      rows[size_t(y) * w + x] = s;
    }
  cv::Mat out(h, w, CV_32FC1);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      double s = 0;
      for (int d = -r; d <= r; ++d) s += k[d + r] * rows[size_t(Reflect(y + d, h)) * w + x];
      out.at<float>(y, x) = float(s);
    }
  return out;
}

}  // namespace fmam::reference
