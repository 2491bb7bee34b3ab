#include "framework/flop_counter.h"

#include <ATen/record_function.h>

#include <atomic>
#include <memory>
#include <string_view>

namespace fmam {

namespace {

thread_local double t_flops = 0;
// Every thread's, for work spread over threads (training: the teacher on one, backward on another).
std::atomic<unsigned long long> g_flops{0};
// aten::convolution calls open now: a backend op it runs inside (aten::mkldnn_convolution) is
// part of it and must not be counted twice.
thread_local int t_convolution_depth = 0;
// FlopCountings alive (count_flops adds nothing without one, as the callbacks do).
std::atomic<int> g_countings{0};

int64_t numel(const c10::IValue& v) { return v.isTensor() ? v.toTensor().numel() : 0; }

// Multiply-adds per output element of a convolution (per input element of a transposed one):
// the weight's size without its first dimension ([Cout, Cin/g, k...] or [Cin, Cout/g, k...]).
double macs_per_element(const at::Tensor& w) {
  int64_t per = 1;
  for (int64_t d = 1; d < w.dim(); ++d) per *= w.size(d);
  return double(per);
}

// aten::convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding,
// groups): each output element of a normal conv takes (Cin / groups) * kh * kw multiply-adds; a
// transposed conv's each *input* element does (Cout / groups) * kh * kw.
double convolution_flops(const at::RecordFunction& fn) {
  const auto in = fn.inputs();
  const auto out = fn.outputs();
  if (in.size() < 9 || out.empty() || !in[1].isTensor()) return 0;
  const at::Tensor& w = in[1].toTensor();
  const bool transposed = in[6].isBool() && in[6].toBool();
  return 2.0 * double(transposed ? numel(in[0]) : numel(out[0])) * macs_per_element(w);
}

// aten::mkldnn_convolution(input, weight, bias, padding, stride, dilation, groups), called
// directly (networks/resnet.cpp does, for float32 inference): a normal convolution.
double mkldnn_convolution_flops(const at::RecordFunction& fn) {
  const auto in = fn.inputs();
  const auto out = fn.outputs();
  if (in.size() < 2 || out.empty() || !in[1].isTensor()) return 0;
  const at::Tensor& w = in[1].toTensor();
  return 2.0 * double(numel(out[0])) * macs_per_element(w);
}

// aten::convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation,
// transposed, output_padding, groups, output_mask): the input's gradient and the weight's each
// take as many multiply-adds as the forward convolution (output_mask says which are computed; the
// bias gradient is a sum, not counted). Autograd calls it for aten::convolution's backward.
// Read at the op's start: libtorch 1.13 boxes output_mask (a std::array) into a list whose
// elements are no longer valid when the end callback runs.
double convolution_backward_flops(const at::RecordFunction& fn) {
  const auto in = fn.inputs();
  if (in.size() < 11 || !in[0].isTensor() || !in[1].isTensor() || !in[2].isTensor()) return 0;
  const at::Tensor& w = in[2].toTensor();
  const bool transposed = in[7].isBool() && in[7].toBool();
  const double forward = 2.0 * double(transposed ? numel(in[1]) : numel(in[0])) * macs_per_element(w);
  const auto mask = in[10].toListRef();
  if (mask.size() < 2 || !mask[0].isBool() || !mask[1].isBool()) return 0;
  return forward * (double(mask[0].toBool()) + double(mask[1].toBool()));
}

// mm(a, b), addmm(c, a, b), bmm(a, b): 2 * M * N * K (* batches) = 2 * numel(out) * K.
double matmul_flops(const at::RecordFunction& fn, int a_index) {
  const auto in = fn.inputs();
  const auto out = fn.outputs();
  if (int(in.size()) <= a_index || out.empty() || !in[size_t(a_index)].isTensor()) return 0;
  const at::Tensor& a = in[size_t(a_index)].toTensor();
  return 2.0 * double(numel(out[0])) * double(a.size(-1));
}

void add(double f) {
  if (f <= 0) return;
  t_flops += f;
  g_flops.fetch_add((unsigned long long)f, std::memory_order_relaxed);
}

std::unique_ptr<at::ObserverContext> enter(const at::RecordFunction& fn) {
  const std::string_view name = fn.name();
  if (name == "aten::convolution") ++t_convolution_depth;
  if (name == "aten::convolution_backward") add(convolution_backward_flops(fn));
  return nullptr;
}

double op_flops(const at::RecordFunction& fn) {
  const std::string_view name = fn.name();
  if (name == "aten::convolution") {
    --t_convolution_depth;
    return convolution_flops(fn);
  }
  if (name == "aten::mkldnn_convolution") return t_convolution_depth == 0 ? mkldnn_convolution_flops(fn) : 0;
  if (name == "aten::mm" || name == "aten::bmm") return matmul_flops(fn, 0);
  if (name == "aten::addmm") return matmul_flops(fn, 1);
  return 0;
}

void count(const at::RecordFunction& fn, at::ObserverContext*) { add(op_flops(fn)); }

}  // namespace

FlopCounting::FlopCounting() {
  handle_ = at::addGlobalCallback(
      at::RecordFunctionCallback(&enter, &count).needsInputs(true).needsOutputs(true).scopes({at::RecordScope::FUNCTION}));
  ++g_countings;
}

FlopCounting::~FlopCounting() {
  --g_countings;
  at::removeCallback(handle_);
}

void count_flops(double flops) {
  if (g_countings.load(std::memory_order_relaxed) > 0) add(flops);
}

double thread_flops() { return t_flops; }

double all_threads_flops() { return double(g_flops.load(std::memory_order_relaxed)); }

}  // namespace fmam
