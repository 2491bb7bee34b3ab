#include "examples/edge_plugin/edge_energy_node.h"

#include <algorithm>
#include <cmath>

#include <opencv2/imgproc.hpp>

namespace example {

void EdgeEnergyNode::process(fmam::Context& ctx) {
  cv::Mat gray = kIn(ctx).get().mat;
  if (gray.channels() == 3) cv::cvtColor(gray, gray, cv::COLOR_BGR2GRAY);
  const int side = std::max(gray.cols, gray.rows);
  if (side > params_.max_side) {
    double s = double(params_.max_side) / side;
    cv::resize(gray, gray, cv::Size(), s, s, cv::INTER_AREA);
  }
  cv::Mat gx, gy, mag;
  cv::Sobel(gray, gx, CV_32F, 1, 0, params_.ksize);
  cv::Sobel(gray, gy, CV_32F, 0, 1, params_.ksize);
  cv::magnitude(gx, gy, mag);
  // Largest Sobel response of one axis on an 8-bit image: 255 * sum of positive taps.
  const double axis_max = 255.0 * (params_.ksize == 3 ? 4 : 48);
  mag *= 1.0 / (std::sqrt(2.0) * axis_max);
  kOut(ctx).send(fmam::Map2D{mag});
}

}  // namespace example

FMAM_REGISTER_NODE(example::EdgeEnergyNode);
