#include "framework/flop_counter.h"

#include <ATen/record_function.h>

#include <memory>
#include <string_view>

namespace fmam {

namespace {

thread_local double t_flops = 0;
// aten::convolution calls open now: a backend op it runs inside (aten::mkldnn_convolution) is
// part of it and must not be counted twice.
thread_local int t_convolution_depth = 0;

int64_t numel(const c10::IValue& v) { return v.isTensor() ? v.toTensor().numel() : 0; }

// aten::convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding,
// groups): each output element of a normal conv takes (Cin / groups) * kh * kw multiply-adds; a
// transposed conv's each *input* element does (Cout / groups) * kh * kw.
double convolution_flops(const at::RecordFunction& fn) {
  const auto in = fn.inputs();
  const auto out = fn.outputs();
  if (in.size() < 9 || out.empty() || !in[1].isTensor()) return 0;
  const at::Tensor& w = in[1].toTensor();
  const bool transposed = in[6].isBool() && in[6].toBool();
  int64_t per = 1;
  for (int64_t d = 1; d < w.dim(); ++d) per *= w.size(d);  // [Cout, Cin/g, k...] or [Cin, Cout/g, k...]
  return 2.0 * double(transposed ? numel(in[0]) : numel(out[0])) * double(per);
}

// aten::mkldnn_convolution(input, weight, bias, padding, stride, dilation, groups), called
// directly (networks/resnet.cpp does, for float32 inference): a normal convolution.
double mkldnn_convolution_flops(const at::RecordFunction& fn) {
  const auto in = fn.inputs();
  const auto out = fn.outputs();
  if (in.size() < 2 || out.empty() || !in[1].isTensor()) return 0;
  const at::Tensor& w = in[1].toTensor();
  int64_t per = 1;
  for (int64_t d = 1; d < w.dim(); ++d) per *= w.size(d);
  return 2.0 * double(numel(out[0])) * double(per);
}

// mm(a, b), addmm(c, a, b), bmm(a, b): 2 * M * N * K (* batches) = 2 * numel(out) * K.
double matmul_flops(const at::RecordFunction& fn, int a_index) {
  const auto in = fn.inputs();
  const auto out = fn.outputs();
  if (int(in.size()) <= a_index || out.empty() || !in[size_t(a_index)].isTensor()) return 0;
  const at::Tensor& a = in[size_t(a_index)].toTensor();
  return 2.0 * double(numel(out[0])) * double(a.size(-1));
}

std::unique_ptr<at::ObserverContext> enter(const at::RecordFunction& fn) {
  if (std::string_view(fn.name()) == "aten::convolution") ++t_convolution_depth;
  return nullptr;
}

void count(const at::RecordFunction& fn, at::ObserverContext*) {
  const std::string_view name = fn.name();
  if (name == "aten::convolution") {
    --t_convolution_depth;
    t_flops += convolution_flops(fn);
  } else if (name == "aten::mkldnn_convolution") {
    if (t_convolution_depth == 0) t_flops += mkldnn_convolution_flops(fn);
  } else if (name == "aten::mm" || name == "aten::bmm")
    t_flops += matmul_flops(fn, 0);
  else if (name == "aten::addmm")
    t_flops += matmul_flops(fn, 1);
}

}  // namespace

FlopCounting::FlopCounting() {
  handle_ = at::addGlobalCallback(
      at::RecordFunctionCallback(&enter, &count).needsInputs(true).needsOutputs(true).scopes({at::RecordScope::FUNCTION}));
}

FlopCounting::~FlopCounting() { at::removeCallback(handle_); }

double thread_flops() { return t_flops; }

}  // namespace fmam
