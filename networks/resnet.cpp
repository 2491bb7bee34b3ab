// The trainable networks (torch::nn modules). The only fmam file that includes torch/nn headers;
// module and parameter names follow torchvision and RD4AD so that their checkpoints map 1:1.
#include "networks/resnet.h"

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>

#include <array>
#include <atomic>
#include <cmath>
#include <mutex>
#include <optional>
#include <set>

#include "networks/weights.h"

namespace fmam {

namespace nn = torch::nn;

// ---- architecture tables -------------------------------------------------------------------

Choices<Arch> arch_choices() {
  return Choices<Arch>{{"resnet18", Arch::kResNet18},
                       {"resnet34", Arch::kResNet34},
                       {"resnet50", Arch::kResNet50},
                       {"wide_resnet50_2", Arch::kWideResNet50_2}};
}

const char* arch_name(Arch a) {
  switch (a) {
    case Arch::kResNet18: return "resnet18";
    case Arch::kResNet34: return "resnet34";
    case Arch::kResNet50: return "resnet50";
    case Arch::kWideResNet50_2: return "wide_resnet50_2";
  }
  return "?";
}

const ArchSpec& arch_spec(Arch a) {
  static const ArchSpec k18{false, {2, 2, 2, 2}, 64}, k34{false, {3, 4, 6, 3}, 64}, k50{true, {3, 4, 6, 3}, 64},
      kWide50{true, {3, 4, 6, 3}, 128};
  switch (a) {
    case Arch::kResNet18: return k18;
    case Arch::kResNet34: return k34;
    case Arch::kResNet50: return k50;
    case Arch::kWideResNet50_2: return kWide50;
  }
  return k18;
}

int64_t layer_channels(Arch a, int layer) { return (int64_t(64) << (layer - 1)) * (arch_spec(a).bottleneck ? 4 : 1); }

int64_t layer_size(int64_t n, int layer) {
  for (int k = 0; k < layer + 1; ++k) n = (n + 1) / 2;
  return n;
}

std::vector<std::vector<int64_t>> pyramid_dims(Arch a, const std::vector<int>& layers, int64_t h, int64_t w) {
  std::vector<std::vector<int64_t>> out;
  for (int l : layers) out.push_back({layer_channels(a, l), h < 0 ? -1 : layer_size(h, l), w < 0 ? -1 : layer_size(w, l)});
  return out;
}

std::vector<int> parse_layers(const std::vector<std::string>& names) {
  std::vector<int> out;
  std::string listing;
  for (const auto& n : names) listing += (listing.empty() ? "\"" : ", \"") + n + "\"";
  const std::string got = "got [" + listing + "]";
  FMAM_CHECK(!names.empty()) << "param \"layers\": needs at least one of layer1..layer4";
  for (const auto& n : names) {
    const int k = (n.size() == 6 && n.compare(0, 5, "layer") == 0) ? n[5] - '0' : -1;
    FMAM_CHECK(k >= 1 && k <= 4) << "param \"layers\": unknown layer \"" << n << "\"; known: layer1, layer2, layer3, layer4";
    FMAM_CHECK(out.empty() || k > out.back())
        << "param \"layers\": must be in increasing order (shallow to deep) without repeats, " << got;
    out.push_back(k);
  }
  return out;
}

// ---- modules -------------------------------------------------------------------------------

namespace {

nn::Conv2d conv(int64_t in, int64_t out, int64_t k, int64_t stride, bool bias = false) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2).bias(bias));
}
nn::ConvTranspose2d deconv2x2(int64_t in, int64_t out) {
  return nn::ConvTranspose2d(nn::ConvTranspose2dOptions(in, out, 2).stride(2).bias(false));
}

}  // namespace

at::Tensor conv_transpose2x2(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias) {
  FMAM_CHECK(x.dim() == 4 && w.dim() == 4 && x.size(1) == w.size(0) && w.size(2) == 2 && w.size(3) == 2)
      << "conv_transpose2x2: input " << shape_str(x.sizes()) << " and weight " << shape_str(w.sizes()) << " do not fit";
  const int64_t n = x.size(0), cin = x.size(1), h = x.size(2), wd = x.size(3), cout = w.size(1);
  // Kernel == stride: every input pixel writes its own 2x2 block of the output, with no overlap,
  // so the whole op is one product [pixels, cin] x [cin, cout * 2 * 2] and a reshuffle.
  const at::Tensor rows = x.permute({0, 2, 3, 1}).reshape({n * h * wd, cin});
  // Output columns are (cout, 2, 2): a bias per output channel repeats over its 2x2 block.
  const at::Tensor y = bias.defined() ? at::addmm(bias.repeat_interleave(4), rows, w.reshape({cin, cout * 4}))
                                      : at::mm(rows, w.reshape({cin, cout * 4}));
  return y.view({n, h, wd, cout, 2, 2}).permute({0, 3, 1, 4, 2, 5}).reshape({n, cout, 2 * h, 2 * wd});
}

ConvTranspose2x2::ConvTranspose2x2(const at::Tensor& w, const at::Tensor& bias) : w_(w), b_(bias) {
  FMAM_CHECK(w.dim() == 4 && w.size(2) == 2 && w.size(3) == 2 && (!bias.defined() || bias.numel() == w.size(1)))
      << "ConvTranspose2x2: weight " << shape_str(w.sizes()) << " is not [Cin, Cout, 2, 2] or the bias does not fit";
  const int64_t cin = w.size(0), cout = w.size(1);
  // Columns (ki, kj, cout), so that a product row (one input pixel) holds the two output rows'
  // runs of 2 * cout values each.
  wk_ = w.permute({0, 2, 3, 1}).reshape({cin, 4 * cout}).contiguous();
  if (bias.defined()) bk_ = bias.repeat(4);
  if (w.scalar_type() == at::kFloat) w1x1_ = wk_.t().contiguous().view({4 * cout, cin, 1, 1});
}

at::Tensor ConvTranspose2x2::operator()(const at::Tensor& x) const {
  FMAM_CHECK(x.dim() == 4 && x.size(1) == w_.size(0))
      << "ConvTranspose2x2: input " << shape_str(x.sizes()) << " does not fit weight " << shape_str(w_.sizes());
  if (!x.is_contiguous(at::MemoryFormat::ChannelsLast) || x.is_contiguous()) return conv_transpose2x2(x, w_, b_);
  const int64_t n = x.size(0), cin = x.size(1), h = x.size(2), wd = x.size(3), cout = w_.size(1);
  at::Tensor rows;  // [n * h * w, (ki, kj, cout)]
  if (x.is_cpu() && x.scalar_type() == at::kFloat && w1x1_.defined()) {
    // float32: the product as a 1x1 conv on oneDNN; libtorch gives at::mm to BLAS (OpenBLAS on
    // Debian, 1.4-1.6x slower here). bfloat16 products already run on oneDNN.
    rows =
        at::mkldnn_convolution(x, w1x1_, bk_.defined() ? c10::optional<at::Tensor>(bk_) : c10::nullopt, {0, 0}, {1, 1}, {1, 1}, 1)
            .permute({0, 2, 3, 1})
            .reshape({n * h * wd, 4 * cout});
  } else {
    const at::Tensor pixels = x.permute({0, 2, 3, 1}).reshape({n * h * wd, cin});
    rows = bk_.defined() ? at::addmm(bk_, pixels, wk_) : at::mm(pixels, wk_);
  }
  // [n, h, w, ki, kj, cout] -> [n, h, ki, w, kj, cout] = NHWC [n, 2h, 2w, cout].
  return rows.view({n, h, wd, 2, 2, cout}).permute({0, 1, 3, 2, 4, 5}).reshape({n, 2 * h, 2 * wd, cout}).permute({0, 3, 1, 2});
}

namespace {

// A convolution with the eval-mode BatchNorm after it folded in (as torch.jit.freeze does):
// BN(conv(x)) = conv(x; w * s) + (beta - mean * s), s = gamma / sqrt(var + eps), per output
// channel. One pass over memory less per BatchNorm, and the bias add fuses into oneDNN's conv.
struct FusedConvBn {
  at::Tensor w, b;
  int64_t stride = 1, pad = 0;
  std::optional<ConvTranspose2x2> transposed;  // a 2x2 stride-2 transposed conv instead

  at::Tensor operator()(const at::Tensor& x) const {
    return transposed ? (*transposed)(x) : at::conv2d(x, w, b, {stride, stride}, {pad, pad});
  }
};

// Folded in double, stored in `type` (float32, or bfloat16 for bf16-mixed inference) and in the
// conv weight's memory format. A transposed conv's weight is [in, out, kh, kw]: s scales dim 1.
FusedConvBn fuse(const at::Tensor& conv_w, const at::Tensor& conv_b, bool transposed, int64_t stride, int64_t pad,
                 nn::BatchNorm2dImpl& bn, at::ScalarType type) {
  const at::Tensor s = bn.weight.to(at::kDouble).div(bn.running_var.to(at::kDouble).add(bn.options.eps()).sqrt());
  const int64_t out = s.size(0);
  const at::Tensor scale = transposed ? s.view({1, out, 1, 1}) : s.view({out, 1, 1, 1});
  at::Tensor shift = bn.bias.to(at::kDouble).sub(bn.running_mean.to(at::kDouble).mul(s));
  if (conv_b.defined()) shift = shift.add(conv_b.to(at::kDouble).mul(s));
  FusedConvBn f;
  f.w = conv_w.to(at::kDouble).mul(scale).to(type).contiguous(conv_w.suggest_memory_format());
  f.b = shift.to(type).contiguous();
  f.stride = stride;
  f.pad = pad;
  if (transposed) f.transposed = ConvTranspose2x2(f.w, f.b);
  return f;
}

// Every Conv2d here pads k / 2 (conv() below): "same" for odd kernels.
FusedConvBn fuse(nn::Conv2dImpl& c, nn::BatchNorm2dImpl& bn, at::ScalarType type) {
  return fuse(c.weight, c.bias, false, (*c.options.stride())[0], c.weight.size(2) / 2, bn, type);
}
FusedConvBn fuse(nn::ConvTranspose2dImpl& c, nn::BatchNorm2dImpl& bn, at::ScalarType type) {
  return fuse(c.weight, c.bias, true, 2, 0, bn, type);
}

// One residual block. Encoder blocks are torchvision's BasicBlock / Bottleneck (stride on the
// 3x3 conv, "ResNet v1.5"); with `up` and stride 2 it is RD4AD's decoder block, where the
// strided conv and the shortcut are 2x2 transposed convs ("upsample").
struct BlockOptions {
  bool bottleneck = false;
  bool up = false;
  int64_t in = 0, planes = 0, width = 0, stride = 1;
};

class BlockImpl : public nn::Module {
 public:
  explicit BlockImpl(const BlockOptions& o) : o_(o) {
    const int64_t out = o.bottleneck ? o.planes * 4 : o.planes;
    // Registration order = torchvision's attribute order = state_dict order.
    if (!o.bottleneck) {
      strided(o.in, o.planes, "conv1");
      bn1_ = register_module("bn1", nn::BatchNorm2d(o.planes));
      conv2_ = register_module("conv2", conv(o.planes, o.planes, 3, 1));
      bn2_ = register_module("bn2", nn::BatchNorm2d(o.planes));
    } else {
      conv1_ = register_module("conv1", conv(o.in, o.width, 1, 1));
      bn1_ = register_module("bn1", nn::BatchNorm2d(o.width));
      strided(o.width, o.width, "conv2");
      bn2_ = register_module("bn2", nn::BatchNorm2d(o.width));
      conv3_ = register_module("conv3", conv(o.width, out, 1, 1));
      bn3_ = register_module("bn3", nn::BatchNorm2d(out));
    }
    if (o.stride != 1 || o.in != out) {
      shortcut_ = nn::Sequential();
      if (o.up)
        shortcut_->push_back(deconv2x2(o.in, out));
      else
        shortcut_->push_back(conv(o.in, out, 1, o.stride));
      shortcut_->push_back(nn::BatchNorm2d(out));
      register_module(o.up ? "upsample" : "downsample", shortcut_);
    }
  }

  at::Tensor forward(const at::Tensor& x) {
    if (fused_) return forward_fused(x);
    at::Tensor out;
    if (!o_.bottleneck) {
      out = bn1_->forward(run_strided(x)).relu_();
      out = bn2_->forward(conv2_->forward(out));
    } else {
      out = bn1_->forward(conv1_->forward(x)).relu_();
      out = bn2_->forward(run_strided(out)).relu_();
      out = bn3_->forward(conv3_->forward(out));
    }
    out += shortcut_ ? run_shortcut(x) : x;
    return out.relu_();
  }

  // Eval mode with BatchNorm folded (Network::set_batchnorm_folding); `type` nullopt: unfold.
  void fuse_batchnorm(std::optional<at::ScalarType> type) {
    if (!type) return fused_.reset();
    const at::ScalarType t = *type;
    auto strided = [&](nn::BatchNorm2dImpl& bn) { return deconv_ ? fuse(*deconv_, bn, t) : fuse(*conv_, bn, t); };
    Fused f;
    if (!o_.bottleneck) {
      f.c1 = strided(*bn1_);
      f.c2 = fuse(*conv2_, *bn2_, t);
    } else {
      f.c1 = fuse(*conv1_, *bn1_, t);
      f.c2 = strided(*bn2_);
      f.c3 = fuse(*conv3_, *bn3_, t);
    }
    if (shortcut_) {
      auto* bn = shortcut_[1]->as<nn::BatchNorm2dImpl>();
      f.shortcut =
          o_.up ? fuse(*shortcut_[0]->as<nn::ConvTranspose2dImpl>(), *bn, t) : fuse(*shortcut_[0]->as<nn::Conv2dImpl>(), *bn, t);
    }
    fused_ = std::move(f);
  }

 private:
  struct Fused {
    FusedConvBn c1, c2, c3, shortcut;  // c3: bottleneck only; shortcut: where there is one
  };

  at::Tensor forward_fused(const at::Tensor& x) const {
    const Fused& f = *fused_;
    at::Tensor out = f.c2(f.c1(x).relu_());
    if (o_.bottleneck) out = f.c3(out.relu_());
    out += shortcut_ ? f.shortcut(x) : x;
    return out.relu_();
  }

  // The conv that carries the stride: 3x3 conv, or a 2x2 transposed conv in an upsampling block.
  void strided(int64_t in, int64_t out, const std::string& name) {
    if (o_.up && o_.stride == 2)
      deconv_ = register_module(name, deconv2x2(in, out));
    else
      conv_ = register_module(name, conv(in, out, 3, o_.stride));
  }
  at::Tensor run_strided(const at::Tensor& x) { return deconv_ ? conv_transpose2x2(x, deconv_->weight) : conv_->forward(x); }
  // downsample (conv + BN) or upsample (transposed conv + BN).
  at::Tensor run_shortcut(const at::Tensor& x) {
    if (!o_.up) return shortcut_->forward(x);
    auto* up = shortcut_[0]->as<nn::ConvTranspose2dImpl>();
    return shortcut_[1]->as<nn::BatchNorm2dImpl>()->forward(conv_transpose2x2(x, up->weight));
  }

  BlockOptions o_;
  std::optional<Fused> fused_;
  nn::Conv2d conv_{nullptr}, conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr};
  nn::ConvTranspose2d deconv_{nullptr};
  nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr}, bn3_{nullptr};
  nn::Sequential shortcut_{nullptr};
};
TORCH_MODULE(Block);

// torchvision's _make_layer (and RD4AD's, with `up`; OCBE passes in_first = 3 * inplanes).
nn::Sequential make_layer(const ArchSpec& s, int64_t in_first, int64_t planes, int blocks, int64_t stride, bool up) {
  nn::Sequential seq;
  const int64_t out = s.bottleneck ? planes * 4 : planes;
  for (int b = 0; b < blocks; ++b) {
    BlockOptions o;
    o.bottleneck = s.bottleneck;
    o.up = up;
    o.in = b == 0 ? in_first : out;
    o.planes = planes;
    o.width = planes * s.width_per_group / 64;
    o.stride = b == 0 ? stride : 1;
    seq->push_back(Block(o));
  }
  return seq;
}

// A network's own input list (n tensors, each [B, C, H, W]); the nodes have already checked
// their pyramids against each other (networks/pyramid_check.h), so this guards direct callers.
void check_network_inputs(const std::vector<at::Tensor>& in, size_t n, const char* what) {
  FMAM_CHECK(in.size() == n) << what << " takes " << n << " inputs, got " << in.size();
  for (const auto& t : in) FMAM_CHECK(t.dim() == 4) << what << " takes 4-D [B, C, H, W] tensors, got " << t.dim() << "-D";
}

class ResNetImpl : public nn::Module {
 public:
  ResNetImpl(Arch a, const std::vector<int>& out_layers) : out_layers_(out_layers) {
    const ArchSpec& s = arch_spec(a);
    conv1_ = register_module("conv1", conv(3, 64, 7, 2));
    bn1_ = register_module("bn1", nn::BatchNorm2d(64));
    int64_t inplanes = 64;
    for (int l = 1; l <= out_layers.back(); ++l) {
      const int64_t planes = int64_t(64) << (l - 1);
      layers_.push_back(
          register_module("layer" + std::to_string(l), make_layer(s, inplanes, planes, s.blocks[l - 1], l == 1 ? 1 : 2, false)));
      inplanes = layer_channels(a, l);
    }
  }

  std::vector<at::Tensor> forward(const std::vector<at::Tensor>& in) {
    check_network_inputs(in, 1, "a ResNet");
    at::Tensor x = fused_stem_ ? (*fused_stem_)(in[0]).relu_() : bn1_->forward(conv1_->forward(in[0])).relu_();
    x = at::max_pool2d(x, {3, 3}, {2, 2}, {1, 1});
    std::vector<at::Tensor> out;
    size_t next = 0;
    for (size_t l = 0; l < layers_.size(); ++l) {
      x = layers_[l]->forward(x);
      if (next < out_layers_.size() && out_layers_[next] == int(l) + 1) {
        out.push_back(x);
        ++next;
      }
    }
    return out;
  }

  // The stem's conv + BN; the blocks fold themselves (Network::set_batchnorm_folding).
  void fuse_batchnorm(std::optional<at::ScalarType> type) {
    if (!type) return fused_stem_.reset();
    fused_stem_ = fuse(*conv1_, *bn1_, *type);
  }

 private:
  std::optional<FusedConvBn> fused_stem_;
  std::vector<int> out_layers_;
  nn::Conv2d conv1_{nullptr};
  nn::BatchNorm2d bn1_{nullptr};
  std::vector<nn::Sequential> layers_;
};
TORCH_MODULE(ResNet);

// RD4AD's BN_layer ("one-class bottleneck embedding"), without its unused conv4/bn4.
class OcbeImpl : public nn::Module {
 public:
  explicit OcbeImpl(Arch a) {
    const ArchSpec& s = arch_spec(a);
    const int64_t e = s.bottleneck ? 4 : 1;
    const int blocks = s.bottleneck ? 3 : 2;  // RD4AD: BN_layer(AttnBasicBlock, 2) / (AttnBottleneck, 3)
    bn_layer_ = register_module("bn_layer", make_layer(s, 3 * 256 * e, 512, blocks, 2, false));
    conv1_ = register_module("conv1", conv(64 * e, 128 * e, 3, 2));
    bn1_ = register_module("bn1", nn::BatchNorm2d(128 * e));
    conv2_ = register_module("conv2", conv(128 * e, 256 * e, 3, 2));
    bn2_ = register_module("bn2", nn::BatchNorm2d(256 * e));
    conv3_ = register_module("conv3", conv(128 * e, 256 * e, 3, 2));
    bn3_ = register_module("bn3", nn::BatchNorm2d(256 * e));
  }

  at::Tensor forward(const std::vector<at::Tensor>& f) {
    at::Tensor l1, l2;
    if (fused_) {
      l1 = (*fused_)[1]((*fused_)[0](f[0]).relu_()).relu_();
      l2 = (*fused_)[2](f[1]).relu_();
    } else {
      l1 = bn1_->forward(conv1_->forward(f[0])).relu_();
      l1 = bn2_->forward(conv2_->forward(l1)).relu_();
      l2 = bn3_->forward(conv3_->forward(f[1])).relu_();
    }
    return bn_layer_->forward(at::cat({l1, l2, f[2]}, 1));
  }

  // Its own three conv + BN pairs; bn_layer's blocks fold themselves (Network::set_batchnorm_folding).
  void fuse_batchnorm(std::optional<at::ScalarType> type) {
    if (!type) return fused_.reset();
    fused_ = {fuse(*conv1_, *bn1_, *type), fuse(*conv2_, *bn2_, *type), fuse(*conv3_, *bn3_, *type)};
  }

 private:
  std::optional<std::array<FusedConvBn, 3>> fused_;
  nn::Sequential bn_layer_{nullptr};
  nn::Conv2d conv1_{nullptr}, conv2_{nullptr}, conv3_{nullptr};
  nn::BatchNorm2d bn1_{nullptr}, bn2_{nullptr}, bn3_{nullptr};
};
TORCH_MODULE(Ocbe);

// RD4AD's de_resnet: layer1 (256 planes), layer2 (128), layer3 (64), each upsampling x2. Block
// counts are RD4AD's: layers[0..2] of the arch, in that order.
class DecoderImpl : public nn::Module {
 public:
  explicit DecoderImpl(Arch a) {
    const ArchSpec& s = arch_spec(a);
    int64_t inplanes = 512 * (s.bottleneck ? 4 : 1);
    for (int l = 0; l < 3; ++l) {
      const int64_t planes = int64_t(256) >> l;
      layers_.push_back(register_module("layer" + std::to_string(l + 1), make_layer(s, inplanes, planes, s.blocks[l], 2, true)));
      inplanes = planes * (s.bottleneck ? 4 : 1);
    }
  }

  // `sizes`: the teacher's levels, deep to shallow, whose [H, W] each decoder layer is cropped to.
  std::vector<at::Tensor> forward(at::Tensor x, const std::vector<at::Tensor>& sizes) {
    std::vector<at::Tensor> out(3);
    for (int l = 0; l < 3; ++l) {
      x = layers_[l]->forward(x);
      const int64_t h = sizes[l].size(2), w = sizes[l].size(3);
      if (x.size(2) != h || x.size(3) != w) {
        FMAM_CHECK(x.size(2) >= h && x.size(3) >= w && x.size(2) <= h + 1 && x.size(3) <= w + 1)
            << "decoder layer" << l + 1 << " gives " << x.size(2) << "x" << x.size(3) << ", the teacher level is " << h << "x"
            << w << "; teacher levels must be layer1..3 of one image";
        x = x.narrow(2, 0, h).narrow(3, 0, w);
      }
      out[2 - l] = x;
    }
    return out;
  }

 private:
  std::vector<nn::Sequential> layers_;
};
TORCH_MODULE(Decoder);

class ReverseStudentImpl : public nn::Module {
 public:
  explicit ReverseStudentImpl(Arch a) : bn_(register_module("bn", Ocbe(a))), decoder_(register_module("decoder", Decoder(a))) {}
  std::vector<at::Tensor> forward(const std::vector<at::Tensor>& f) {
    check_network_inputs(f, 3, "an RD4AD student");
    return decoder_->forward(bn_->forward(f), {f[2], f[1], f[0]});
  }

 private:
  Ocbe bn_;
  Decoder decoder_;
};
TORCH_MODULE(ReverseStudent);

class MlpImpl : public nn::Module {
 public:
  MlpImpl(int64_t c, int64_t hidden)
      : fc1_(register_module("fc1", conv(c, hidden, 1, 1, true))), fc2_(register_module("fc2", conv(hidden, c, 1, 1, true))) {}
  at::Tensor forward(const at::Tensor& x) {
    if (!is_training() && !at::GradMode::is_enabled() && x.is_cpu() && x.scalar_type() == at::kFloat &&
        fc1_->weight.scalar_type() == at::kFloat)
      return forward_onednn(x);
    return fc2_->forward(fc1_->forward(x).relu_());
  }

 private:
  // Inference in float32: libtorch sends a 1x1 conv with a batch under 16 on one thread to its
  // native kernel, a BLAS product (OpenBLAS here, 85-100 GFLOP/s); oneDNN's 1x1 kernel does
  // 130-190, the most on channels-last input (the teacher's pyramid). The output keeps the
  // input's memory format.
  at::Tensor forward_onednn(const at::Tensor& x) const {
    const at::Tensor h = at::mkldnn_convolution(x, fc1_->weight, fc1_->bias, {0, 0}, {1, 1}, {1, 1}, 1).relu_();
    return at::mkldnn_convolution(h, fc2_->weight, fc2_->bias, {0, 0}, {1, 1}, {1, 1}, 1);
  }

  nn::Conv2d fc1_, fc2_;
};
TORCH_MODULE(Mlp);

class FeatureMapImpl : public nn::Module {
 public:
  FeatureMapImpl(const std::vector<int64_t>& channels, const std::vector<int64_t>& hidden) {
    for (size_t j = 0; j < channels.size(); ++j)
      levels_.push_back(register_module("level" + std::to_string(j), Mlp(channels[j], hidden[j])));
  }
  std::vector<at::Tensor> forward(const std::vector<at::Tensor>& in) {
    check_network_inputs(in, levels_.size(), "the feature map");
    std::vector<at::Tensor> out;
    for (size_t j = 0; j < in.size(); ++j) out.push_back(levels_[j]->forward(in[j]));
    return out;
  }

 private:
  std::vector<Mlp> levels_;
};
TORCH_MODULE(FeatureMap);

// ---- seeded initialisation -----------------------------------------------------------------

enum class ConvInit {
  kKaimingFanOut,  // torchvision ResNet / RD4AD: normal(0, sqrt(2 / (out * k * k))) for Conv2d
  kTorchDefault,   // PyTorch's reset_parameters(): uniform(+-1 / sqrt(fan_in)) (kaiming_uniform
                   // a=sqrt(5))
};

// Re-initialises every conv and BatchNorm from a private generator, so a seed gives the same
// weights whatever else uses torch's global RNG. Transposed convs keep PyTorch's default scheme
// in both cases, as RD4AD's isinstance(m, nn.Conv2d) loop leaves them.
void init_module(nn::Module& m, ConvInit scheme, uint64_t seed) {
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  at::NoGradGuard no_grad;
  auto uniform_fan_in = [&](at::Tensor& w, int64_t fan_in) {
    const double bound = 1.0 / std::sqrt(double(fan_in));
    w.uniform_(-bound, bound, gen);
  };
  for (const auto& sub : m.modules()) {
    if (auto* c = dynamic_cast<nn::Conv2dImpl*>(sub.get())) {
      const int64_t k = c->weight.size(2) * c->weight.size(3);
      if (scheme == ConvInit::kKaimingFanOut)
        c->weight.normal_(0.0, std::sqrt(2.0 / double(c->weight.size(0) * k)), gen);
      else
        uniform_fan_in(c->weight, c->weight.size(1) * k);
      if (c->bias.defined()) uniform_fan_in(c->bias, c->weight.size(1) * k);
    } else if (auto* t = dynamic_cast<nn::ConvTranspose2dImpl*>(sub.get())) {
      // torch's fan_in of a transposed-conv weight [in, out, kh, kw] is out * kh * kw.
      uniform_fan_in(t->weight, t->weight.size(1) * t->weight.size(2) * t->weight.size(3));
    } else if (auto* b = dynamic_cast<nn::BatchNorm2dImpl*>(sub.get())) {
      b->weight.fill_(1);
      b->bias.zero_();
      b->running_mean.zero_();
      b->running_var.fill_(1);
      b->num_batches_tracked.zero_();
    }
  }
}

}  // namespace

// ---- Network -------------------------------------------------------------------------------

struct Network::Impl {
  std::shared_ptr<nn::Module> module;
  std::function<std::vector<at::Tensor>(const std::vector<at::Tensor>&)> forward;
  Precision precision = Precision::kFloat32;            // training's (set_precision)
  Precision inference_precision = Precision::kFloat32;  // eval mode's (set_inference_precision)
  bool fold_batchnorm = false;                          // set_batchnorm_folding
  std::atomic<bool> folded{false};                      // the modules hold folded weights of the current state
  std::mutex fold_mutex;                                // eval forwards run on several TBB workers at once
};

namespace {
// torch.autocast("cpu", torch.bfloat16) for one scope: autocast state is per thread, and the
// training tail runs on whichever TBB worker is free, so it is set around each call. The cast
// weights are cached inside the outermost scope and dropped when it ends (as Python does).
class CpuBf16Autocast {
 public:
  CpuBf16Autocast() : was_enabled_(at::autocast::is_cpu_enabled()), was_dtype_(at::autocast::get_autocast_cpu_dtype()) {
    at::autocast::set_autocast_cpu_dtype(at::kBFloat16);
    at::autocast::set_cpu_enabled(true);
  }
  ~CpuBf16Autocast() {
    at::autocast::set_cpu_enabled(was_enabled_);
    at::autocast::set_autocast_cpu_dtype(was_dtype_);
    if (!was_enabled_) at::autocast::clear_cache();
  }
  CpuBf16Autocast(const CpuBf16Autocast&) = delete;
  CpuBf16Autocast& operator=(const CpuBf16Autocast&) = delete;

 private:
  bool was_enabled_;
  at::ScalarType was_dtype_;
};
}  // namespace

namespace {
// Folds (type) or unfolds (nullopt) every module that has conv + BatchNorm pairs of its own.
void fuse_modules(nn::Module& root, std::optional<at::ScalarType> type) {
  at::NoGradGuard no_grad;
  for (const auto& m : root.modules()) {
    if (auto* b = dynamic_cast<BlockImpl*>(m.get()))
      b->fuse_batchnorm(type);
    else if (auto* o = dynamic_cast<OcbeImpl*>(m.get()))
      o->fuse_batchnorm(type);
    else if (auto* r = dynamic_cast<ResNetImpl*>(m.get()))
      r->fuse_batchnorm(type);
  }
}
}  // namespace

// Folded lazily, at the first eval forward after the weights last changed (load_state() comes
// after the node is built), once for all threads.
void Network::ensure_folded() const {
  if (impl_->folded.load(std::memory_order_acquire)) return;
  std::lock_guard<std::mutex> lock(impl_->fold_mutex);
  if (impl_->folded.load(std::memory_order_relaxed)) return;
  const bool bf16 = impl_->inference_precision == Precision::kBFloat16Mixed;
  fuse_modules(*impl_->module, bf16 ? at::kBFloat16 : at::kFloat);
  impl_->folded.store(true, std::memory_order_release);
}

void Network::drop_folded() const {
  std::lock_guard<std::mutex> lock(impl_->fold_mutex);
  if (!impl_->folded.load(std::memory_order_relaxed)) return;
  fuse_modules(*impl_->module, std::nullopt);
  impl_->folded.store(false, std::memory_order_release);
}

bool Network::is_folded() const { return impl_->folded.load(std::memory_order_acquire); }

void Network::set_batchnorm_folding(bool on) const {
  drop_folded();
  impl_->fold_batchnorm = on;
}

std::vector<at::Tensor> Network::forward(const std::vector<at::Tensor>& in) const {
  if (impl_->fold_batchnorm && !impl_->module->is_training()) ensure_folded();
  if (impl_->inference_precision == Precision::kBFloat16Mixed && !impl_->module->is_training()) return forward_bf16_weights(in);
  if (impl_->precision != Precision::kBFloat16Mixed || !impl_->module->is_training() || in.empty() || !in[0].device().is_cpu())
    return impl_->forward(in);
  std::vector<at::Tensor> out;
  {
    CpuBf16Autocast autocast;
    out = impl_->forward(in);
  }
  for (auto& t : out)
    if (t.scalar_type() != at::kFloat) t = t.to(at::kFloat);  // a recorded cast: gradients flow
  return out;
}

std::vector<at::Tensor> Network::forward_with_running_stats(const std::vector<at::Tensor>& in) const {
  std::vector<nn::Module*> bns;
  for (const auto& m : impl_->module->modules())
    if (dynamic_cast<nn::BatchNorm2dImpl*>(m.get()) && m->is_training()) bns.push_back(m.get());
  struct Restore {  // back to training mode, also when forward throws
    std::vector<nn::Module*>& bns;
    ~Restore() {
      for (auto* m : bns) m->train();
    }
  } restore{bns};
  for (auto* m : bns) m->eval();
  return forward(in);
}

void Network::set_precision(Precision p) const { impl_->precision = p; }

// Inference in bfloat16 without autocast: autocast would cast every weight again on every call
// (a fifth of the RD student's time); here they are cast once. BatchNorm keeps float32
// parameters and takes bfloat16 inputs (libtorch's mixed-type BatchNorm).
void Network::set_inference_precision(Precision p) const {
  if (p == impl_->inference_precision) return;
  FMAM_CHECK(p == Precision::kFloat32 || !impl_->module->is_training()) << "bf16-mixed inference: the network is training";
  drop_folded();
  impl_->inference_precision = p;
  if (impl_->fold_batchnorm) return;  // the folded weights are made in p from the float32 ones
  const at::ScalarType type = p == Precision::kBFloat16Mixed ? at::kBFloat16 : at::kFloat;
  at::NoGradGuard no_grad;
  for (const auto& m : impl_->module->modules())
    if (dynamic_cast<nn::Conv2dImpl*>(m.get()) || dynamic_cast<nn::ConvTranspose2dImpl*>(m.get()))
      for (auto& t : m->parameters(false)) t.set_data(t.to(type));
}

std::vector<at::Tensor> Network::forward_bf16_weights(const std::vector<at::Tensor>& in) const {
  std::vector<at::Tensor> x;
  for (const auto& t : in) x.push_back(t.to(at::kBFloat16));
  std::vector<at::Tensor> out = impl_->forward(x);
  for (auto& t : out) t = t.to(at::kFloat);
  return out;
}

std::vector<std::pair<std::string, at::Tensor>> Network::named_state() const {
  // Python's state_dict() order: each module's own parameters, then its buffers, depth first.
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (const auto& item : impl_->module->named_modules()) {
    const std::string prefix = item.key().empty() ? "" : item.key() + ".";
    for (const auto& p : item.value()->named_parameters(false)) out.emplace_back(prefix + p.key(), p.value());
    for (const auto& b : item.value()->named_buffers(false)) out.emplace_back(prefix + b.key(), b.value());
  }
  return out;
}

void Network::load_state(const std::map<std::string, at::Tensor>& state) const {
  const auto mine = named_state();
  StateProblems problems;
  std::set<std::string> known;
  for (const auto& [name, t] : mine) {
    known.insert(name);
    auto it = state.find(name);
    if (it == state.end())
      problems.missing(name);
    else if (it->second.sizes() != t.sizes())
      problems.mis_shaped(name, it->second.sizes(), t.sizes());
  }
  for (const auto& [name, t] : state)
    if (!known.count(name)) problems.unexpected(name);
  FMAM_CHECK(problems.empty()) << "state does not fit the network: " << problems.str();
  drop_folded();
  at::NoGradGuard no_grad;
  for (const auto& [name, t] : mine) {
    at::Tensor dst = t;  // shares storage with the parameter
    dst.copy_(state.at(name));
  }
}

std::vector<at::Tensor> Network::parameters() const { return impl_->module->parameters(); }

int64_t Network::parameter_count() const {
  int64_t n = 0;
  for (const auto& p : impl_->module->parameters()) n += p.numel();
  return n;
}

void Network::train(bool on) const {
  // Its conv weights are bfloat16 copies now: an optimizer would update those.
  FMAM_CHECK(!on || impl_->inference_precision == Precision::kFloat32)
      << "a network set up for bf16-mixed inference cannot train";
  drop_folded();  // training changes the weights; the next eval forward folds them again
  impl_->module->train(on);
}
bool Network::is_training() const { return impl_->module->is_training(); }
torch::nn::Module& Network::module() const { return *impl_->module; }

void Network::to_channels_last() const {
  drop_folded();
  at::NoGradGuard no_grad;
  for (auto& p : impl_->module->parameters())
    if (p.dim() == 4) p.set_data(p.contiguous(at::MemoryFormat::ChannelsLast));
}

void Network::to(at::Device device) const {
  if (this->device() == device) return;
  drop_folded();
  impl_->module->to(device);
}

at::Device Network::device() const {
  auto ps = impl_->module->parameters();
  return ps.empty() ? at::Device(at::kCPU) : ps.front().device();
}

Network make_resnet(Arch arch, const std::vector<int>& out_layers, uint64_t seed) {
  FMAM_CHECK(!out_layers.empty()) << "make_resnet: no layers";
  ResNet m(arch, out_layers);
  init_module(*m, ConvInit::kKaimingFanOut, seed);
  auto impl = std::make_shared<Network::Impl>();
  impl->module = m.ptr();
  impl->forward = [m](const std::vector<at::Tensor>& in) mutable { return m->forward(in); };
  return Network(impl);
}

Network make_reverse_student(Arch arch, uint64_t seed) {
  ReverseStudent m(arch);
  init_module(*m, ConvInit::kKaimingFanOut, seed);
  auto impl = std::make_shared<Network::Impl>();
  impl->module = m.ptr();
  impl->forward = [m](const std::vector<at::Tensor>& in) mutable { return m->forward(in); };
  return Network(impl);
}

Network make_feature_map(const std::vector<int64_t>& channels, const std::vector<int64_t>& hidden, uint64_t seed) {
  FMAM_CHECK(channels.size() == hidden.size() && !channels.empty()) << "make_feature_map: bad sizes";
  FeatureMap m(channels, hidden);
  init_module(*m, ConvInit::kTorchDefault, seed);
  auto impl = std::make_shared<Network::Impl>();
  impl->module = m.ptr();
  impl->forward = [m](const std::vector<at::Tensor>& in) mutable { return m->forward(in); };
  return Network(impl);
}

}  // namespace fmam
