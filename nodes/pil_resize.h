// Resampling as Pillow's Image.resize(size, Image.BILINEAR) does it, bit for bit: the filter
// torchvision's transforms.Resize applies to PIL images, and so the preprocessing that RD4AD,
// anomalib and ImageNet-trained teachers saw. Downscaling widens the triangle filter by the
// scale factor (antialiasing: 512 -> 256 weighs 4 source pixels 1/8, 3/8, 3/8, 1/8), which none
// of OpenCV's filters does; INTER_AREA averages 2 (1/2, 1/2) and INTER_LINEAR samples 2.
// Separable, 8-bit fixed point with Pillow's 22 fractional bits and a rounding to 8 bits after
// each pass (horizontal first), as libImaging/Resample.c.
#pragma once

#include <opencv2/core.hpp>

namespace fmam {

// `src`: 8-bit, any number of channels (each filtered alone). Returns `size` (width, height).
cv::Mat resize_like_pil_bilinear(const cv::Mat& src, cv::Size size);

}  // namespace fmam
