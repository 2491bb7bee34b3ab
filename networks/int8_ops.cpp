#include "networks/int8_ops.h"

#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/native/quantized/PackedParams.h>
#include <ATen/ops/aminmax.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/quantize_per_channel.h>
#include <ATen/ops/quantize_per_tensor.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cmath>

#include "framework/error.h"
#include "framework/flop_counter.h"

namespace fmam {

using PackedConv = c10::intrusive_ptr<ConvPackedParamsBase<2>>;

struct Int8Conv::Packed {
  PackedConv conv;
};

void widen(ActivationRanges& ranges, const std::string& point, const at::Tensor& t) {
  auto [lo_t, hi_t] = at::aminmax(t);
  const float lo = lo_t.item<float>(), hi = hi_t.item<float>();
  auto [it, fresh] = ranges.emplace(point, std::make_pair(lo, hi));
  if (!fresh) it->second = {std::min(it->second.first, lo), std::max(it->second.second, hi)};
}

void merge(ActivationRanges& into, const ActivationRanges& from) {
  for (const auto& [point, r] : from) {
    auto [it, fresh] = into.emplace(point, r);
    if (!fresh) it->second = {std::min(it->second.first, r.first), std::max(it->second.second, r.second)};
  }
}

std::map<std::string, at::Tensor> ranges_to_tensors(const ActivationRanges& ranges) {
  std::map<std::string, at::Tensor> out;
  for (const auto& [point, r] : ranges) {
    at::Tensor t = at::empty({2}, at::kFloat);
    t.data_ptr<float>()[0] = r.first;
    t.data_ptr<float>()[1] = r.second;
    out[point] = t;
  }
  return out;
}

ActivationRanges ranges_from_tensors(const std::map<std::string, at::Tensor>& tensors) {
  ActivationRanges r;
  for (const auto& [point, t] : tensors) {
    if (!t.defined() || t.numel() != 2 || !t.is_floating_point())
      throw Error("int8 calibration: activation \"" + point + "\" must be a [min, max] float tensor");
    const at::Tensor f = t.to(at::kFloat).contiguous();
    r[point] = {f.data_ptr<float>()[0], f.data_ptr<float>()[1]};
  }
  return r;
}

QParams qparams_at(const ActivationRanges& ranges, const std::string& point, int quant_max) {
  auto it = ranges.find(point);
  if (it == ranges.end()) throw Error("int8 calibration: no range for activation \"" + point + "\"");
  const auto [first, second] = it->second;
  if (!std::isfinite(first) || !std::isfinite(second) || first > second)
    throw Error("int8 calibration: activation \"" + point + "\" has an invalid range");
  if (quant_max < 1 || quant_max > 255) throw Error("int8: quant_max must be in 1..255, got " + std::to_string(quant_max));
  const double lo = std::min<double>(first, 0), hi = std::max<double>(second, 0);
  QParams q;
  q.scale = std::max((hi - lo) / quant_max, 1e-8);
  q.zero_point = std::clamp<int64_t>(std::llround(-lo / q.scale), 0, quant_max);
  return q;
}

int int8_activation_max(bool has_int8_dot_products) { return has_int8_dot_products ? 255 : 127; }

bool int8_engine_available() {
  const auto& engines = at::globalContext().supportedQEngines();
  if (std::find(engines.begin(), engines.end(), at::QEngine::ONEDNN) == engines.end()) return false;
  at::globalContext().setQEngine(at::QEngine::ONEDNN);  // what Int8Conv packs for
  return true;
}

Int8Conv::Int8Conv(const at::Tensor& w_in, const at::Tensor& bias, int64_t stride, int64_t pad, const QParams& out, bool relu)
    : out_(out), relu_(relu) {
  if (!int8_engine_available()) throw Error("int8: this libtorch has no onednn quantized engine");
  const at::Tensor w = w_in.to(at::kFloat).contiguous();
  const at::Tensor scales = w.abs().amax({1, 2, 3}).div(127.0).clamp_min(1e-12).to(at::kDouble);
  const at::Tensor qw = at::quantize_per_channel(w, scales, at::zeros({w.size(0)}, at::kLong), 0, at::kQInt8);
  static auto prepack = c10::Dispatcher::singleton()
                            .findSchemaOrThrow("quantized::conv2d_prepack", "")
                            .typed<PackedConv(at::Tensor, c10::optional<at::Tensor>, c10::List<int64_t>, c10::List<int64_t>,
                                              c10::List<int64_t>, int64_t)>();
  auto p = std::make_shared<Packed>();
  p->conv = prepack.call(qw, bias.defined() ? c10::optional<at::Tensor>(bias.to(at::kFloat)) : c10::nullopt,
                         c10::List<int64_t>({stride, stride}), c10::List<int64_t>({pad, pad}), c10::List<int64_t>({1, 1}), 1);
  packed_ = p;
  macs_per_output_ = double(w.numel() / w.size(0));
}

at::Tensor Int8Conv::operator()(const at::Tensor& x) const {
  const PackedConv& c = packed_->conv;
  at::Tensor y = relu_ ? c->apply_relu(x, out_.scale, out_.zero_point) : c->apply(x, out_.scale, out_.zero_point);
  count_flops(2.0 * double(y.numel()) * macs_per_output_);
  return y;
}

at::Tensor int8_add_relu(const at::Tensor& a, const at::Tensor& b, const QParams& out) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("quantized::add_relu", "")
                       .typed<at::Tensor(at::Tensor, at::Tensor, double, int64_t)>();
  return op.call(a, b, out.scale, out.zero_point);
}

at::Tensor int8_quantize(const at::Tensor& x, const QParams& q) {
  return at::quantize_per_tensor(x.to(at::kFloat).contiguous(at::MemoryFormat::ChannelsLast), q.scale, q.zero_point, at::kQUInt8);
}

}  // namespace fmam
