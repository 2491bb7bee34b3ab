// Adam with an optional L1 penalty: torch.optim.Adam 1.13's single-tensor update (foreach=False,
// amsgrad=False), op for op, plus l1 * sign(p) added to the gradient first (the subgradient of
// l1 * sum|p|, 0 at p = 0): FMAM's stage 2 uses "an L1 weight decay of 1e-5" (Sec. 4.1.3), which
// torch.optim lacks. Our own class, not torch::optim, so its state goes into our model files and
// a resumed run continues bit-exactly.
//
//   AdamOptions o;  o.lr = 1e-4;  o.l1 = 1e-5;
//   Adam opt(params, o);
//   loss.backward(); opt.step(); opt.zero_grad();
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace fmam {

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0;  // L2: + weight_decay * p on the gradient, as torch.optim.Adam's
  double l1 = 0;            // L1: + l1 * sign(p) on the gradient, before weight_decay
};

class Adam {
 public:
  using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

  // `params` are updated in place (the tensors are shared, not copied). Throws fmam::Error on an
  // undefined param or an option out of range (lr, eps, weight_decay, l1 < 0; betas not in [0, 1)).
  Adam(std::vector<at::Tensor> params, AdamOptions options = {});

  // One update of every param whose grad is defined; params without a grad are left alone and
  // their own step count does not advance (torch's behaviour). Runs under NoGradGuard.
  void step();
  // set_to_none: drop the grads (torch >= 2.0's default); else zero them in place (1.13's).
  void zero_grad(bool set_to_none = true);

  // Copies of the state, for a model file:
  //   "step"                int64 []   step() calls so far
  //   "param_step"          int64 [N]  per param, updates it received (torch's state['step'])
  //   "exp_avg.<i>"         like param i: first moment
  //   "exp_avg_sq.<i>"      like param i: second moment
  // Options (lr, betas, ...) are configuration, not state: give the same ones when resuming.
  NamedTensors state() const;
  // Copies a state() back in (any device; moved to each param's). Throws fmam::Error naming every
  // missing, mis-shaped or unexpected tensor; nothing changes then.
  void load_state(const NamedTensors& state);
  void load_state(const std::map<std::string, at::Tensor>& state);

  int64_t steps() const { return steps_; }
  const AdamOptions& options() const { return options_; }
  void set_lr(double lr);  // for schedules
  const std::vector<at::Tensor>& params() const { return params_; }

 private:
  std::vector<at::Tensor> params_;
  AdamOptions options_;
  std::vector<at::Tensor> exp_avg_, exp_avg_sq_;
  std::vector<int64_t> param_step_;
  int64_t steps_ = 0;
};

}  // namespace fmam
