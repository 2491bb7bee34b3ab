// Reference 1 - cosine similarity along channels, as plain loops in double precision, with
// torch 1.13's eps convention (torch.nn.functional.cosine_similarity): each vector is divided by
// max(||v||, eps) before the dot product.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <algorithm>
#include <cmath>

namespace fmam::reference {

// t, s: [B, C, H, W] float -> [B, 1, H, W] float.
inline at::Tensor CosineDiscrepancy(const at::Tensor& t, const at::Tensor& s, double eps = 1e-8) {
  const at::Tensor a = t.contiguous(), b = s.contiguous();
  const int64_t B = a.size(0), C = a.size(1), H = a.size(2), W = a.size(3);
  at::Tensor out = at::empty({B, 1, H, W}, at::kFloat);
  const float* pa = a.data_ptr<float>();
  const float* pb = b.data_ptr<float>();
  float* po = out.data_ptr<float>();
  for (int64_t n = 0; n < B; ++n)
    for (int64_t p = 0; p < H * W; ++p) {
      double dot = 0, na = 0, nb = 0;
      for (int64_t c = 0; c < C; ++c) {
        const double x = pa[(n * C + c) * H * W + p], y = pb[(n * C + c) * H * W + p];
        dot += x * y;
        na += x * x;
        nb += y * y;
      }
      const double cos = dot / (std::max(std::sqrt(na), eps) * std::max(std::sqrt(nb), eps));
      po[n * H * W + p] = float(1.0 - cos);
    }
  return out;
}

}  // namespace fmam::reference
