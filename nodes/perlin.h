// 2-D gradient (Perlin) noise as DRAEM's rand_perlin_2d_np (Zavrtanik et al., ICCV 2021,
// data_loader.py / perlin.py), generalised to sizes that res does not divide: pixel y lies at
// u = y * res_y / H in gradient cell floor(u) with offset u - floor(u), which is exactly DRAEM's
// np.mgrid(...) % 1 and np.repeat tiling when H is a multiple of res_y. Values are
// sqrt(2) * (bilinear blend of the 4 corner dot products) with the quintic fade 6t^5-15t^4+10t^3,
// so they lie in [-1, 1]. Axis 0 (rows) pairs with the cosine of a gradient angle, as in DRAEM.
#pragma once

#include <cstdint>
#include <opencv2/core/mat.hpp>
#include <vector>

namespace fmam {

// Noise of `size` (CV_32FC1) over res_y x res_x gradient cells. `angles` holds the
// (res_y + 1) x (res_x + 1) gradient angles in radians, row-major (DRAEM draws them as
// 2*pi*U[0,1)).
cv::Mat perlin_2d(cv::Size size, int res_y, int res_x, const std::vector<double>& angles);

}  // namespace fmam
