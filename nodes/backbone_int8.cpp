#include "nodes/backbone_int8.h"

#include <ATen/Context.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/native/quantized/PackedParams.h>
#include <ATen/ops/aminmax.h>
#include <ATen/ops/max_pool2d.h>
#include <ATen/ops/quantize_per_channel.h>
#include <ATen/ops/quantize_per_tensor.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cmath>

#include "framework/error.h"
#include "framework/flop_counter.h"
#include "nodes/backbone_net.h"

namespace fmam {

namespace {

using PackedConv = c10::intrusive_ptr<ConvPackedParamsBase<2>>;

// The names of a block's convs in torchvision: conv1, conv2 (, conv3).
std::string conv_name(const std::string& block, size_t i) { return block + ".conv" + std::to_string(i + 1); }
std::string block_name(size_t layer, size_t b) { return "layer" + std::to_string(layer + 1) + "." + std::to_string(b); }

std::vector<const FoldedConv*> main_path(const FoldedBlock& blk) {
  if (blk.bottleneck) return {&blk.c1, &blk.c2, &blk.c3};
  return {&blk.c1, &blk.c2};
}

void widen(ActivationRanges& ranges, const std::string& point, const at::Tensor& t) {
  auto [lo_t, hi_t] = at::aminmax(t);
  const float lo = lo_t.item<float>(), hi = hi_t.item<float>();
  auto it = ranges.find(point);
  if (it == ranges.end())
    ranges[point] = {lo, hi};
  else
    it->second = {std::min(it->second.first, lo), std::max(it->second.second, hi)};
}

// uint8 affine parameters covering [lo, hi] and zero (so that ReLU's zeros and padding's zeros
// are exact), as PyTorch's MinMax observers make them.
struct QParams {
  double scale = 1;
  int64_t zero_point = 0;
};
QParams qparams_for(const std::pair<float, float>& range) {
  const double lo = std::min<double>(range.first, 0), hi = std::max<double>(range.second, 0);
  QParams q;
  q.scale = std::max((hi - lo) / 255.0, 1e-8);
  q.zero_point = std::clamp<int64_t>(std::llround(-lo / q.scale), 0, 255);
  return q;
}

// The folded float weights as int8, one symmetric scale per output channel (PyTorch's
// per_channel_symmetric weight observer), packed for onednn with the float bias.
PackedConv pack(const FoldedConv& c) {
  const at::Tensor w = c.w.to(at::kFloat).contiguous();
  const at::Tensor scales = w.abs().amax({1, 2, 3}).div(127.0).clamp_min(1e-12).to(at::kDouble);
  const at::Tensor zeros = at::zeros({w.size(0)}, at::kLong);
  const at::Tensor qw = at::quantize_per_channel(w, scales, zeros, 0, at::kQInt8);
  static auto prepack = c10::Dispatcher::singleton()
                            .findSchemaOrThrow("quantized::conv2d_prepack", "")
                            .typed<PackedConv(at::Tensor, c10::optional<at::Tensor>, c10::List<int64_t>, c10::List<int64_t>,
                                              c10::List<int64_t>, int64_t)>();
  return prepack.call(qw, c.b.to(at::kFloat), c10::List<int64_t>({c.stride, c.stride}), c10::List<int64_t>({c.pad, c.pad}),
                      c10::List<int64_t>({1, 1}), 1);
}

at::Tensor add_relu(const at::Tensor& a, const at::Tensor& b, const QParams& q) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("quantized::add_relu", "")
                       .typed<at::Tensor(at::Tensor, at::Tensor, double, int64_t)>();
  return op.call(a, b, q.scale, q.zero_point);
}

}  // namespace

bool int8_engine_available() {
  const auto& engines = at::globalContext().supportedQEngines();
  return std::find(engines.begin(), engines.end(), at::QEngine::ONEDNN) != engines.end();
}

std::vector<std::string> activation_points(const BackboneNode::Net& net, int last_layer) {
  std::vector<std::string> names = {"input", "stem"};
  for (size_t l = 0; l < net.layers.size() && int(l) < last_layer; ++l)
    for (size_t b = 0; b < net.layers[l].size(); ++b) {
      const std::string blk = block_name(l, b);
      for (size_t i = 0; i < main_path(net.layers[l][b]).size(); ++i) names.push_back(conv_name(blk, i));
      if (net.layers[l][b].has_down) names.push_back(blk + ".downsample");
      names.push_back(blk + ".out");
    }
  return names;
}

void observe_ranges(const BackboneNode::Net& net, const at::Tensor& image, int last_layer, ActivationRanges& ranges) {
  at::Tensor x = image.to(at::kFloat).contiguous(at::MemoryFormat::ChannelsLast);
  widen(ranges, "input", x);
  x = net.stem(x).relu_();
  widen(ranges, "stem", x);
  x = at::max_pool2d(x, {3, 3}, {2, 2}, {1, 1});
  for (size_t l = 0; l < net.layers.size() && int(l) < last_layer; ++l)
    for (size_t b = 0; b < net.layers[l].size(); ++b) {
      const FoldedBlock& blk = net.layers[l][b];
      const std::string name = block_name(l, b);
      const auto convs = main_path(blk);
      at::Tensor h = x;
      for (size_t i = 0; i < convs.size(); ++i) {
        h = (*convs[i])(h);
        if (i + 1 < convs.size()) h.relu_();
        widen(ranges, conv_name(name, i), h);
      }
      at::Tensor identity = x;
      if (blk.has_down) {
        identity = blk.down(x);
        widen(ranges, name + ".downsample", identity);
      }
      x = (h + identity).relu_();
      widen(ranges, name + ".out", x);
    }
}

struct Int8Backbone::Impl {
  struct Conv {
    PackedConv packed;
    QParams out;  // of its output
    bool relu = false;
    double macs_per_output = 0;  // Cin * kh * kw
    at::Tensor operator()(const at::Tensor& x) const {
      at::Tensor y = relu ? packed->apply_relu(x, out.scale, out.zero_point) : packed->apply(x, out.scale, out.zero_point);
      // Not a torch op callback sees: fmam bench's GFLOP/s counts it here.
      count_flops(2.0 * double(y.numel()) * macs_per_output);
      return y;
    }
  };
  struct Block {
    std::vector<Conv> main;
    Conv down;
    bool has_down = false;
    QParams out;
  };
  QParams input;
  Conv stem;
  std::vector<std::vector<Block>> layers;
};

Int8Backbone::Int8Backbone(const BackboneNode::Net& net, int last_layer, const ActivationRanges& ranges) {
  if (!int8_engine_available()) throw Error("int8: this libtorch has no onednn quantized engine");
  at::globalContext().setQEngine(at::QEngine::ONEDNN);  // what pack() packs for
  auto range = [&](const std::string& point) {
    auto it = ranges.find(point);
    if (it == ranges.end()) throw Error("int8 calibration: no range for activation \"" + point + "\"");
    if (!std::isfinite(it->second.first) || !std::isfinite(it->second.second) || it->second.first > it->second.second)
      throw Error("int8 calibration: activation \"" + point + "\" has an invalid range");
    return qparams_for(it->second);
  };
  auto impl = std::make_shared<Impl>();
  impl->input = range("input");
  auto conv = [](const FoldedConv& c, const QParams& out, bool relu) {
    return Impl::Conv{pack(c), out, relu, double(c.w.numel() / c.w.size(0))};
  };
  impl->stem = conv(net.stem, range("stem"), true);
  for (size_t l = 0; l < net.layers.size() && int(l) < last_layer; ++l) {
    std::vector<Impl::Block> blocks;
    for (size_t b = 0; b < net.layers[l].size(); ++b) {
      const FoldedBlock& blk = net.layers[l][b];
      const std::string name = block_name(l, b);
      Impl::Block q;
      const auto convs = main_path(blk);
      for (size_t i = 0; i < convs.size(); ++i)
        q.main.push_back(conv(*convs[i], range(conv_name(name, i)), i + 1 < convs.size()));
      q.has_down = blk.has_down;
      if (blk.has_down) q.down = conv(blk.down, range(name + ".downsample"), false);
      q.out = range(name + ".out");
      blocks.push_back(std::move(q));
    }
    impl->layers.push_back(std::move(blocks));
  }
  impl_ = impl;
}

std::vector<at::Tensor> Int8Backbone::operator()(const at::Tensor& image, const std::vector<int>& layers,
                                                 at::MemoryFormat out_format) const {
  const Impl& m = *impl_;
  at::Tensor x = at::quantize_per_tensor(image.to(at::kFloat).contiguous(at::MemoryFormat::ChannelsLast), m.input.scale,
                                         m.input.zero_point, at::kQUInt8);
  // Dilation spelt out: the quantized kernel reads two values where the default gives one.
  x = at::max_pool2d(m.stem(x), {3, 3}, {2, 2}, {1, 1}, {1, 1});
  std::vector<at::Tensor> out;
  size_t next = 0;
  for (size_t l = 0; l < m.layers.size() && next < layers.size(); ++l) {
    for (const Impl::Block& blk : m.layers[l]) {
      at::Tensor h = x;
      for (const Impl::Conv& c : blk.main) h = c(h);
      x = add_relu(h, blk.has_down ? blk.down(x) : x, blk.out);
    }
    if (layers[next] == int(l) + 1) {
      out.push_back(x.dequantize().contiguous(out_format));
      ++next;
    }
  }
  return out;
}

}  // namespace fmam
