// The core data types that flow between nodes (STYLE.md: images, maps, scalars, masks).
// Tensors and feature pyramids live in framework/tensor_types.h, so files that do not touch
// libtorch never pay for its headers.
#pragma once

#include <opencv2/core/mat.hpp>

#include "framework/packet.h"

namespace fmam {

// A decoded image, 8-bit BGR (or 1-channel gray), at its original resolution.
struct Image {
  cv::Mat mat;
};
// A 2-D float32 map (an anomaly map), HxW CV_32FC1.
struct Map2D {
  cv::Mat mat;
};
// A binary mask, HxW CV_8UC1, 0 or 255.
struct Mask {
  cv::Mat mat;
};
// One number per frame (an image score).
struct Scalar {
  double value = 0.0;
};

FMAM_DATA_TYPE(Image, "Image");
FMAM_DATA_TYPE(Map2D, "Map2D");
FMAM_DATA_TYPE(Mask, "Mask");
FMAM_DATA_TYPE(Scalar, "Scalar");

}  // namespace fmam
