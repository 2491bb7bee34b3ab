// The int8 building blocks of a quantised network (nodes/backbone_int8.h, the teacher, uses them;
// a student in int8 was tried and measured too inaccurate: docs/PERFORMANCE.md): libtorch's
// quantized CPU kernels on the onednn engine, as PyTorch's post-training static quantization with the onednn qconfig uses
// them. Weights: int8, one symmetric scale per output channel. Activations: uint8, one affine
// scale per tensor, from the [min, max] recorded on defect-free images in float32.
#pragma once

#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>
#include <utility>

namespace fmam {

// Activation point name -> (min, max) seen.
using ActivationRanges = std::map<std::string, std::pair<float, float>>;

// Widens ranges[point] to cover t's values.
void widen(ActivationRanges& ranges, const std::string& point, const at::Tensor& t);
// Widens every range of `into` to cover `from`'s (adding the points it lacks).
void merge(ActivationRanges& into, const ActivationRanges& from);
// As model files keep them: point -> float32 [min, max]. from_tensors throws Error naming a point
// whose tensor is not two floats.
std::map<std::string, at::Tensor> ranges_to_tensors(const ActivationRanges& ranges);
ActivationRanges ranges_from_tensors(const std::map<std::string, at::Tensor>& tensors);

// uint8 affine parameters covering [min, max] and zero (so that ReLU's and padding's zeros are
// exact) with the codes 0..quant_max, as PyTorch's MinMax observers make them.
struct QParams {
  double scale = 1;
  int64_t zero_point = 0;
};
// ranges[point]'s; throws Error naming a missing point or a range that is not finite.
QParams qparams_at(const ActivationRanges& ranges, const std::string& point, int quant_max);

// The largest uint8 code an activation may take on a CPU with or without int8 dot products
// (framework/cpu_features.h). With them (VNNI), oneDNN sums u8 x s8 products in int32: 255.
// Without, it multiplies with vpmaddubsw, which adds each pair of products into a saturating
// int16, and 2 x 255 x 127 overflows it: on an AVX2 host the teacher's features came out at a
// mean cosine of 0.90 to fp32's at layer2 (docs/PERFORMANCE.md). 127 cannot overflow: PyTorch's
// reduce_range, which its onednn qconfig asks for on CPUs without VNNI, at one bit of resolution.
int int8_activation_max(bool has_int8_dot_products);

// Whether this libtorch has the onednn quantized engine; selects it (process-wide) when it does.
bool int8_engine_available();

// A float convolution (BatchNorm already folded in: w [Cout, Cin, k, k], bias [Cout]) as an int8
// one whose output is requantised to `out` (and ReLU'd if asked). Its arithmetic is added to
// fmam bench's count (framework/flop_counter.h), which torch's op callbacks would not see.
class Int8Conv {
 public:
  Int8Conv() = default;
  Int8Conv(const at::Tensor& w, const at::Tensor& bias, int64_t stride, int64_t pad, const QParams& out, bool relu);
  at::Tensor operator()(const at::Tensor& x) const;  // quint8 [B, Cin, H, W] -> quint8 [B, Cout, H', W']

  struct Packed;

 private:
  std::shared_ptr<const Packed> packed_;
  QParams out_;
  bool relu_ = false;
  double macs_per_output_ = 0;  // Cin * kh * kw
};

// relu(a + b), requantised to `out` (quantized::add_relu).
at::Tensor int8_add_relu(const at::Tensor& a, const at::Tensor& b, const QParams& out);
// Float to quint8 in channels-last memory.
at::Tensor int8_quantize(const at::Tensor& x, const QParams& q);

}  // namespace fmam
