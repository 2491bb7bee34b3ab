// Reference image score: sort every value, largest first, and average the first k (all of them
// when k exceeds the pixel count), in double.
#pragma once

#include <algorithm>
#include <functional>
#include <opencv2/core/mat.hpp>
#include <vector>

namespace fmam::reference {

inline double TopKMean(const cv::Mat& map, int k) {
  std::vector<float> v;
  for (int y = 0; y < map.rows; ++y)
    for (int x = 0; x < map.cols; ++x) v.push_back(map.at<float>(y, x));
  std::sort(v.begin(), v.end(), std::greater<float>());
  const size_t n = std::min(v.size(), size_t(k));
  double s = 0;
  for (size_t i = 0; i < n; ++i) s += v[i];
  return s / double(n);
}

}  // namespace fmam::reference
