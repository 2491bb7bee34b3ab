#include "nodes/backbone_int8.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/max_pool2d.h>

#include "nodes/backbone_net.h"

namespace fmam {

namespace {

// The names of a block's convs in torchvision: conv1, conv2 (, conv3).
std::string conv_name(const std::string& block, size_t i) { return block + ".conv" + std::to_string(i + 1); }
std::string block_name(size_t layer, size_t b) { return "layer" + std::to_string(layer + 1) + "." + std::to_string(b); }

std::vector<const FoldedConv*> main_path(const FoldedBlock& blk) {
  if (blk.bottleneck) return {&blk.c1, &blk.c2, &blk.c3};
  return {&blk.c1, &blk.c2};
}

Int8Conv quantized(const FoldedConv& c, const QParams& out, bool relu) { return Int8Conv(c.w, c.b, c.stride, c.pad, out, relu); }

}  // namespace

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
  struct Block {
    std::vector<Int8Conv> main;
    Int8Conv down;
    bool has_down = false;
    QParams out;
  };
  QParams input;
  Int8Conv stem;
  std::vector<std::vector<Block>> layers;
};

Int8Backbone::Int8Backbone(const BackboneNode::Net& net, int last_layer, const ActivationRanges& ranges, int activation_max) {
  const auto point_qparams = [&](const std::string& point) { return qparams_at(ranges, point, activation_max); };
  auto impl = std::make_shared<Impl>();
  impl->input = point_qparams("input");
  impl->stem = quantized(net.stem, point_qparams("stem"), true);
  for (size_t l = 0; l < net.layers.size() && int(l) < last_layer; ++l) {
    std::vector<Impl::Block> blocks;
    for (size_t b = 0; b < net.layers[l].size(); ++b) {
      const FoldedBlock& blk = net.layers[l][b];
      const std::string name = block_name(l, b);
      Impl::Block q;
      const auto convs = main_path(blk);
      for (size_t i = 0; i < convs.size(); ++i)
        q.main.push_back(quantized(*convs[i], point_qparams(conv_name(name, i)), i + 1 < convs.size()));
      q.has_down = blk.has_down;
      if (blk.has_down) q.down = quantized(blk.down, point_qparams(name + ".downsample"), false);
      q.out = point_qparams(name + ".out");
      blocks.push_back(std::move(q));
    }
    impl->layers.push_back(std::move(blocks));
  }
  impl_ = impl;
}

std::vector<at::Tensor> Int8Backbone::operator()(const at::Tensor& image, const std::vector<int>& layers,
                                                 at::MemoryFormat out_format) const {
  const Impl& m = *impl_;
  at::Tensor x = int8_quantize(image, m.input);
  // Dilation spelt out: the quantized kernel reads two values where the default gives one.
  x = at::max_pool2d(m.stem(x), {3, 3}, {2, 2}, {1, 1}, {1, 1});
  std::vector<at::Tensor> out;
  size_t next = 0;
  for (size_t l = 0; l < m.layers.size() && next < layers.size(); ++l) {
    for (const Impl::Block& blk : m.layers[l]) {
      at::Tensor h = x;
      for (const Int8Conv& c : blk.main) h = c(h);
      x = int8_add_relu(h, blk.has_down ? blk.down(x) : x, blk.out);
    }
    if (layers[next] == int(l) + 1) {
      out.push_back(x.dequantize().contiguous(out_format));
      ++next;
    }
  }
  return out;
}

}  // namespace fmam
