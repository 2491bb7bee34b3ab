#include "nodes/cosine_discrepancy_node.h"

#include <ATen/ops/cosine_similarity.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/rsub.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "networks/pyramid_check.h"

namespace fmam {

Shapes CosineDiscrepancyNode::infer(const Params&, const Shapes& in) {
  const Shape& t = in.at(kInTeacher);
  const Shape& s = in.at(kInStudent);
  if (t.known && s.known) check_levels_match(t.levels, "input \"teacher\"", s.levels, kInStudent.name, true);
  if (!t.known && !s.known) return {{kOut, Shape::unknown()}};
  // Per level [1, H, W], from whichever side knows the size.
  const Shape& k = t.known ? t : s;
  std::vector<std::vector<int64_t>> maps;
  for (size_t j = 0; j < k.levels.size(); ++j) {
    auto dim = [&](size_t d) {
      int64_t v = d < k.levels[j].size() ? k.levels[j][d] : -1;
      if (v < 0 && t.known && s.known && d < s.levels[j].size()) v = s.levels[j][d];
      return v;
    };
    maps.push_back({1, dim(1), dim(2)});
  }
  return {{kOut, Shape::pyramid(maps)}};
}

namespace {

// One pass over both inputs, per pixel: dot, |t|^2, |s|^2 summed over channels (float
// accumulators, vectorised along the pixels of contiguous NCHW data), then torch's formula.
// About 4x faster than at::cosine_similarity's five passes (0.3 vs 1.3 ms at 256x256, resnet18).
at::Tensor fused_discrepancy(const at::Tensor& t, const at::Tensor& s) {
  const int64_t B = t.size(0), C = t.size(1), HW = t.size(2) * t.size(3);
  at::Tensor out = at::empty({B, 1, t.size(2), t.size(3)}, t.options().memory_format(at::MemoryFormat::Contiguous));
  const float* pt = t.data_ptr<float>();
  const float* ps = s.data_ptr<float>();
  float* po = out.data_ptr<float>();
  std::vector<float> dot(HW), nt(HW), ns(HW);
  const float eps = float(CosineDiscrepancyNode::kEps);
  for (int64_t n = 0; n < B; ++n) {
    std::fill(dot.begin(), dot.end(), 0.0f);
    std::fill(nt.begin(), nt.end(), 0.0f);
    std::fill(ns.begin(), ns.end(), 0.0f);
    for (int64_t c = 0; c < C; ++c) {
      const float* a = pt + (n * C + c) * HW;
      const float* b = ps + (n * C + c) * HW;
      for (int64_t p = 0; p < HW; ++p) {
        dot[p] += a[p] * b[p];
        nt[p] += a[p] * a[p];
        ns[p] += b[p] * b[p];
      }
    }
    float* o = po + n * HW;
    for (int64_t p = 0; p < HW; ++p) o[p] = 1.0f - dot[p] / (std::max(std::sqrt(nt[p]), eps) * std::max(std::sqrt(ns[p]), eps));
  }
  return out;
}

// The same for channels-last inputs (the networks' outputs at inference), where a pixel's C
// values are contiguous: 16 partial sums per quantity (one vector each), added up per pixel.
// The sums' order differs from the NCHW loop's, so results differ in the last bits.
at::Tensor fused_discrepancy_nhwc(const at::Tensor& t, const at::Tensor& s) {
  constexpr int kLanes = 16;
  const int64_t B = t.size(0), C = t.size(1), pixels = B * t.size(2) * t.size(3);
  at::Tensor out = at::empty({B, 1, t.size(2), t.size(3)}, t.options().memory_format(at::MemoryFormat::Contiguous));
  const float* pt = t.data_ptr<float>();
  const float* ps = s.data_ptr<float>();
  float* po = out.data_ptr<float>();
  const float eps = float(CosineDiscrepancyNode::kEps);
  for (int64_t q = 0; q < pixels; ++q) {
    const float* a = pt + q * C;
    const float* b = ps + q * C;
    float dot_l[kLanes] = {}, nt_l[kLanes] = {}, ns_l[kLanes] = {};
    int64_t c = 0;
    for (; c + kLanes <= C; c += kLanes)
      for (int k = 0; k < kLanes; ++k) {
        dot_l[k] += a[c + k] * b[c + k];
        nt_l[k] += a[c + k] * a[c + k];
        ns_l[k] += b[c + k] * b[c + k];
      }
    // Fold the lanes in halves (vector adds), then the last four one by one.
    for (int half = kLanes / 2; half >= 4; half /= 2)
      for (int k = 0; k < half; ++k) {
        dot_l[k] += dot_l[k + half];
        nt_l[k] += nt_l[k + half];
        ns_l[k] += ns_l[k + half];
      }
    float dot = (dot_l[0] + dot_l[1]) + (dot_l[2] + dot_l[3]);
    float nt = (nt_l[0] + nt_l[1]) + (nt_l[2] + nt_l[3]);
    float ns = (ns_l[0] + ns_l[1]) + (ns_l[2] + ns_l[3]);
    for (; c < C; ++c) {
      dot += a[c] * b[c];
      nt += a[c] * a[c];
      ns += b[c] * b[c];
    }
    po[q] = 1.0f - dot / (std::max(std::sqrt(nt), eps) * std::max(std::sqrt(ns), eps));
  }
  return out;
}

bool channels_last(const at::Tensor& x) { return x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous(); }

}  // namespace

std::vector<at::Tensor> CosineDiscrepancyNode::compute(const std::vector<at::Tensor>& teacher,
                                                       const std::vector<at::Tensor>& student) {
  check_levels_match(level_dims(teacher), "input \"teacher\"", level_dims(student), kInStudent.name, true);
  bool grad = false;
  for (const auto& v : {&teacher, &student})
    for (const auto& x : *v) grad = grad || x.requires_grad();
  c10::InferenceMode guard(!grad);  // per thread: set on whichever worker runs this frame
  std::vector<at::Tensor> maps;
  for (size_t j = 0; j < teacher.size(); ++j) {
    const at::Tensor& t = teacher[j];
    const at::Tensor& s = student[j];
    if (!grad && t.is_cpu() && s.is_cpu() && t.scalar_type() == at::kFloat && s.scalar_type() == at::kFloat) {
      maps.push_back(channels_last(t) && channels_last(s) ? fused_discrepancy_nhwc(t, s)
                                                          : fused_discrepancy(t.contiguous(), s.contiguous()));
    } else {  // autograd (a loss downstream) or another device / dtype: torch's own op
      maps.push_back(at::rsub(at::cosine_similarity(t, s, 1, kEps), 1).unsqueeze(1));
    }
  }
  return maps;
}

void CosineDiscrepancyNode::process(Context& ctx) {
  kOut(ctx).send(FeaturePyramid{compute(kInTeacher(ctx).get().levels, kInStudent(ctx).get().levels)});
}

FMAM_REGISTER_NODE(CosineDiscrepancyNode);

}  // namespace fmam
