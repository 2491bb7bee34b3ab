#include "training/adam.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>

#include "framework/error.h"

namespace fmam {

namespace {

std::string sizes_str(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

void check_options(const AdamOptions& o) {
  auto bad = [](const char* name, double v, const char* want) {
    throw Error(std::string("Adam: option \"") + name + "\" must be " + want + ", got " + std::to_string(v));
  };
  if (!(o.lr >= 0)) bad("lr", o.lr, ">= 0");
  if (!(o.beta1 >= 0 && o.beta1 < 1)) bad("beta1", o.beta1, "in [0, 1)");
  if (!(o.beta2 >= 0 && o.beta2 < 1)) bad("beta2", o.beta2, "in [0, 1)");
  if (!(o.eps >= 0)) bad("eps", o.eps, ">= 0");
  if (!(o.weight_decay >= 0)) bad("weight_decay", o.weight_decay, ">= 0");
  if (!(o.l1 >= 0)) bad("l1", o.l1, ">= 0");
}

}  // namespace

Adam::Adam(std::vector<at::Tensor> params, AdamOptions options) : params_(std::move(params)), options_(options) {
  check_options(options_);
  for (size_t i = 0; i < params_.size(); ++i) {
    if (!params_[i].defined()) throw Error("Adam: param " + std::to_string(i) + " is undefined");
    // torch allocates these lazily on the first step; zeros now give the same first update.
    exp_avg_.push_back(at::zeros_like(params_[i], at::MemoryFormat::Preserve).detach());
    exp_avg_sq_.push_back(at::zeros_like(params_[i], at::MemoryFormat::Preserve).detach());
  }
  param_step_.assign(params_.size(), 0);
}

void Adam::set_lr(double lr) {
  AdamOptions o = options_;
  o.lr = lr;
  check_options(o);
  options_ = o;
}

void Adam::step() {
  at::NoGradGuard no_grad;
  const AdamOptions& o = options_;
  for (size_t i = 0; i < params_.size(); ++i) {
    at::Tensor& p = params_[i];
    if (!p.grad().defined()) continue;
    at::Tensor grad = p.grad();
    const int64_t step = ++param_step_[i];
    // The same ops in the same order as torch/optim/adam.py's _single_tensor_adam (1.13), so
    // results match torch bit for bit on the same build; the scalars are Python floats there,
    // doubles here.
    if (o.l1 != 0) grad = grad.add(p.sign(), o.l1);
    if (o.weight_decay != 0) grad = grad.add(p, o.weight_decay);
    exp_avg_[i].mul_(o.beta1).add_(grad, 1 - o.beta1);
    exp_avg_sq_[i].mul_(o.beta2).addcmul_(grad, grad, 1 - o.beta2);
    const double bias_correction1 = 1 - std::pow(o.beta1, double(step));
    const double bias_correction2 = 1 - std::pow(o.beta2, double(step));
    const double step_size = o.lr / bias_correction1;
    const double bias_correction2_sqrt = std::sqrt(bias_correction2);
    at::Tensor denom = (exp_avg_sq_[i].sqrt() / bias_correction2_sqrt).add_(o.eps);
    p.addcdiv_(exp_avg_[i], denom, -step_size);
  }
  ++steps_;
}

void Adam::zero_grad(bool set_to_none) {
  for (auto& p : params_) {
    at::Tensor& g = p.mutable_grad();
    if (!g.defined()) continue;
    if (set_to_none) {
      g = at::Tensor();
    } else {
      if (g.grad_fn())
        g = g.detach();
      else
        g.requires_grad_(false);
      g.zero_();
    }
  }
}

Adam::NamedTensors Adam::state() const {
  NamedTensors out;
  out.emplace_back("step", at::scalar_tensor(steps_, at::kLong));
  out.emplace_back(
      "param_step",
      at::tensor(std::vector<int64_t>(param_step_.begin(), param_step_.end()), at::kLong).reshape({int64_t(param_step_.size())}));
  for (size_t i = 0; i < params_.size(); ++i) out.emplace_back("exp_avg." + std::to_string(i), exp_avg_[i].detach().clone());
  for (size_t i = 0; i < params_.size(); ++i)
    out.emplace_back("exp_avg_sq." + std::to_string(i), exp_avg_sq_[i].detach().clone());
  return out;
}

void Adam::load_state(const NamedTensors& state) {
  std::map<std::string, at::Tensor> m;
  for (const auto& [k, v] : state) m[k] = v;
  load_state(m);
}

void Adam::load_state(const std::map<std::string, at::Tensor>& state) {
  std::vector<std::string> missing, shaped, unexpected;
  // Expected names and shapes, from this optimizer's params.
  std::map<std::string, std::vector<int64_t>> want;
  want["step"] = {};
  want["param_step"] = {int64_t(params_.size())};
  for (size_t i = 0; i < params_.size(); ++i) {
    want["exp_avg." + std::to_string(i)] = params_[i].sizes().vec();
    want["exp_avg_sq." + std::to_string(i)] = params_[i].sizes().vec();
  }
  for (const auto& [name, sizes] : want) {
    auto it = state.find(name);
    if (it == state.end() || !it->second.defined())
      missing.push_back(name);
    else if (it->second.sizes().vec() != sizes)
      shaped.push_back(name + " " + sizes_str(it->second.sizes()) + " (expected " + sizes_str(sizes) + ")");
  }
  for (const auto& [name, t] : state)
    if (!want.count(name)) unexpected.push_back(name);
  if (!missing.empty() || !shaped.empty() || !unexpected.empty()) {
    std::string msg = "Adam: state does not fit " + std::to_string(params_.size()) + " params";
    auto list = [&msg](const char* kind, const std::vector<std::string>& xs) {
      if (xs.empty()) return;
      msg += std::string("; ") + kind + ": ";
      for (size_t i = 0; i < xs.size(); ++i) msg += (i ? ", " : "") + xs[i];
    };
    list("missing", missing);
    list("mis-shaped", shaped);
    list("unexpected", unexpected);
    throw Error(msg);
  }

  at::NoGradGuard no_grad;
  steps_ = state.at("step").to(at::kCPU, at::kLong).item<int64_t>();
  const at::Tensor ps = state.at("param_step").to(at::kCPU, at::kLong).contiguous();
  for (size_t i = 0; i < params_.size(); ++i) {
    param_step_[i] = ps.data_ptr<int64_t>()[i];
    exp_avg_[i].copy_(state.at("exp_avg." + std::to_string(i)));
    exp_avg_sq_[i].copy_(state.at("exp_avg_sq." + std::to_string(i)));
  }
}

}  // namespace fmam
