// The teacher's network as BackboneNode runs it: torchvision's ResNet with every BatchNorm folded
// into the conv before it (backbone_node.cpp builds it from a state dict). Shared by the float
// node and its int8 twin (backbone_int8.h), which quantises these folded weights.
#pragma once

#include <ATen/ops/conv2d.h>

#include <memory>
#include <vector>

#include "nodes/backbone_node.h"

namespace fmam {

struct FoldedConv {
  at::Tensor w, b;
  int64_t stride = 1, pad = 0;
  FoldedConv cast(at::ScalarType t) const { return {w.to(t), b.to(t), stride, pad}; }
  at::Tensor operator()(const at::Tensor& x) const {
    if (x.device() == w.device()) return at::conv2d(x, w, b, {stride, stride}, {pad, pad});
    // Weights live on the CPU; another device gets a copy per call (cache them when a CUDA
    // build needs the speed).
    return at::conv2d(x, w.to(x.device()), b.to(x.device()), {stride, stride}, {pad, pad});
  }
};

struct FoldedBlock {
  FoldedConv c1, c2, c3, down;
  bool bottleneck = false, has_down = false;
  FoldedBlock cast(at::ScalarType t) const {
    FoldedBlock b = *this;
    for (FoldedConv* c : {&b.c1, &b.c2, &b.c3, &b.down})
      if (c->w.defined()) *c = c->cast(t);
    return b;
  }
  at::Tensor operator()(const at::Tensor& x) const {
    at::Tensor out = c1(x).relu_();
    out = c2(out);
    if (bottleneck) out = c3(out.relu_());
    out += has_down ? down(x) : x;
    return out.relu_();
  }
};

struct BackboneNode::Net {
  FoldedConv stem;
  std::vector<std::vector<FoldedBlock>> layers;
  bool channels_last = false;
  at::ScalarType dtype = at::kFloat;  // of the weights, and so of the arithmetic

  // A copy computing in `t`: bf16-mixed inference keeps this besides the float32 network, which
  // the fingerprint (a model's record of its teacher) is always computed with.
  std::shared_ptr<const Net> cast(at::ScalarType t) const {
    auto n = std::make_shared<Net>(*this);
    n->stem = stem.cast(t);
    for (auto& layer : n->layers)
      for (auto& blk : layer) blk = blk.cast(t);
    n->dtype = t;
    return n;
  }
};

}  // namespace fmam
