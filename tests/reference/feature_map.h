// Reference for FMAM's per-level feature mapping: a 1x1 conv is a matrix product per pixel, so
// y = W2 relu(W1 x + b1) + b2 at every pixel, as plain loops in double precision.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <vector>

namespace fmam::reference {

// x [B, C, H, W]; w1 [D, C, 1, 1], b1 [D]; w2 [C, D, 1, 1], b2 [C] -> [B, C, H, W] float.
inline at::Tensor FeatureMapLevel(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& b1, const at::Tensor& w2,
                                  const at::Tensor& b2) {
  const at::Tensor xc = x.contiguous(), w1c = w1.contiguous(), w2c = w2.contiguous();
  const int64_t B = xc.size(0), C = xc.size(1), HW = xc.size(2) * xc.size(3), D = w1c.size(0);
  at::Tensor out = at::empty(xc.sizes(), at::kFloat);
  const float *px = xc.data_ptr<float>(), *pw1 = w1c.data_ptr<float>(), *pw2 = w2c.data_ptr<float>();
  const float *pb1 = b1.data_ptr<float>(), *pb2 = b2.data_ptr<float>();
  float* po = out.data_ptr<float>();
  std::vector<double> hidden(D);
  for (int64_t n = 0; n < B; ++n)
    for (int64_t p = 0; p < HW; ++p) {
      for (int64_t d = 0; d < D; ++d) {
        double h = pb1[d];
        for (int64_t c = 0; c < C; ++c) h += double(pw1[d * C + c]) * px[(n * C + c) * HW + p];
        hidden[d] = std::max(h, 0.0);
      }
      for (int64_t c = 0; c < C; ++c) {
        double y = pb2[c];
        for (int64_t d = 0; d < D; ++d) y += double(pw2[c * D + d]) * hidden[d];
        po[(n * C + c) * HW + p] = float(y);
      }
    }
  return out;
}

}  // namespace fmam::reference
