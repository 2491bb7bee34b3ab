// Reference bilinear upsampling, as torch.nn.functional.interpolate(mode="bilinear") defines it,
// written as plain loops in double precision over the four neighbours, and the Eq. 8 combination.
#pragma once

#include <algorithm>
#include <cmath>
#include <opencv2/core/mat.hpp>
#include <vector>

namespace fmam::reference {

// Source coordinate of output index d along an axis of `in` -> `out` samples.
inline double BilinearSource(int d, int in, int out, bool align_corners) {
  if (align_corners) return out > 1 ? d * double(in - 1) / double(out - 1) : 0.0;
  double s = (d + 0.5) * double(in) / double(out) - 0.5;
  return s < 0 ? 0.0 : s;
}

inline cv::Mat BilinearResize(const cv::Mat& in, int out_h, int out_w, bool align_corners) {
  cv::Mat out(out_h, out_w, CV_32FC1);
  for (int y = 0; y < out_h; ++y) {
    const double sy = BilinearSource(y, in.rows, out_h, align_corners);
    const int y0 = std::min(int(std::floor(sy)), in.rows - 1), y1 = std::min(y0 + 1, in.rows - 1);
    const double ly = sy - y0;
    for (int x = 0; x < out_w; ++x) {
      const double sx = BilinearSource(x, in.cols, out_w, align_corners);
      const int x0 = std::min(int(std::floor(sx)), in.cols - 1), x1 = std::min(x0 + 1, in.cols - 1);
      const double lx = sx - x0;
      const double v = (1 - ly) * (1 - lx) * in.at<float>(y0, x0) + (1 - ly) * lx * in.at<float>(y0, x1) +
                       ly * (1 - lx) * in.at<float>(y1, x0) + ly * lx * in.at<float>(y1, x1);
      out.at<float>(y, x) = float(v);
    }
  }
  return out;
}

// S_L: the levels upsampled to out_h x out_w, summed (or multiplied).
inline cv::Mat UpsampleSum(const std::vector<cv::Mat>& levels, int out_h, int out_w, bool align_corners, bool multiply = false) {
  cv::Mat acc(out_h, out_w, CV_32FC1, cv::Scalar(multiply ? 1.0 : 0.0));
  for (const cv::Mat& l : levels) {
    cv::Mat up = BilinearResize(l, out_h, out_w, align_corners);
    for (int y = 0; y < out_h; ++y)
      for (int x = 0; x < out_w; ++x)
        acc.at<float>(y, x) = multiply ? acc.at<float>(y, x) * up.at<float>(y, x) : acc.at<float>(y, x) + up.at<float>(y, x);
  }
  return acc;
}

}  // namespace fmam::reference
