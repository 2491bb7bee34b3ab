#!/usr/bin/python3
"""Writes tests/testdata/adam_fixture.json: torch.optim.Adam trajectories that
tests/training/adam_test.cpp compares training/adam.{h,cpp} against.

Run with Debian's torch 1.13 from the repo root:  /usr/bin/python3 tests/testdata/make_adam_fixture.py

torch.optim.Adam has no L1 penalty; as training/adam.cpp does, the subgradient l1 * sign(p) is
added to the gradient by hand before each step (sign(0) = 0), and Adam's own weight_decay (L2)
is then applied by torch. Numbers are float32 values written as exact decimal doubles.

Cases
  given_grads: the gradients are fixed random tensors (no autograd), with p containing exact
               zeros; at step 3 param "b" has no grad (torch skips it and its step count stays).
  quadratic:   gradients from autograd of mean((x @ w + b - y)^2), a tiny regression.
  plain:       default torch.optim.Adam (no weight decay, no L1) on the quadratic.
"""
import json
import os

import torch

torch.manual_seed(0)


def flat(t):
    return [float(v) for v in t.detach().reshape(-1).tolist()]


def tensor_json(t):
    return {"shape": list(t.shape), "values": flat(t)}


def run_case(name, params, grad_fn, opts, steps, skip=None):
    """params: dict name -> tensor; grad_fn(step, params) sets the .grad of each param."""
    skip = skip or {}
    ps = [p.clone().requires_grad_(True) for p in params.values()]
    names = list(params.keys())
    opt = torch.optim.Adam(ps, lr=opts["lr"], betas=(opts["beta1"], opts["beta2"]),
                           eps=opts["eps"], weight_decay=opts["weight_decay"], foreach=False)
    case = {"name": name, "options": opts,
            "init": {n: tensor_json(p) for n, p in zip(names, ps)},
            "grads": [], "after": []}
    for k in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        grad_fn(k, dict(zip(names, ps)))
        for n, p in zip(names, ps):
            if n in skip.get(k, ()):
                p.grad = None
        case["grads"].append({n: (tensor_json(p.grad) if p.grad is not None else None)
                              for n, p in zip(names, ps)})
        # The L1 subgradient, by hand.
        with torch.no_grad():
            for p in ps:
                if p.grad is not None and opts["l1"] != 0:
                    p.grad.add_(opts["l1"] * torch.sign(p))
        opt.step()
        case["after"].append({n: tensor_json(p) for n, p in zip(names, ps)})
    case["final_state"] = {
        n: {"step": float(opt.state[p]["step"]),
            "exp_avg": tensor_json(opt.state[p]["exp_avg"]),
            "exp_avg_sq": tensor_json(opt.state[p]["exp_avg_sq"])}
        for n, p in zip(names, ps)}
    return case


cases = []

# given_grads ---------------------------------------------------------------------------------
w0 = torch.tensor([[0.5, -1.25, 0.0], [2.0, 0.0, -0.75]])
b0 = torch.tensor([0.1, -0.2, 0.0])
fixed = {k: {"w": torch.randn(2, 3), "b": torch.randn(3)} for k in range(1, 6)}
fixed[2]["w"][0, 2] = 0.0  # a zero gradient on a zero param: only the penalties move it


def given(k, ps):
    for n, p in ps.items():
        p.grad = fixed[k][n].clone()


cases.append(run_case(
    "given_grads", {"w": w0, "b": b0}, given,
    {"lr": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.05, "l1": 0.02},
    steps=5, skip={3: ("b",)}))

# quadratic -----------------------------------------------------------------------------------
x = torch.randn(4, 3)
y = torch.randn(4, 2)
wq = torch.randn(3, 2)
bq = torch.zeros(2)


def quad(k, ps):
    loss = ((x @ ps["w"] + ps["b"] - y) ** 2).mean()
    loss.backward()


for name, opts in [
        ("quadratic", {"lr": 0.05, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6,
                       "weight_decay": 1e-2, "l1": 1e-2}),
        ("plain", {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                   "weight_decay": 0.0, "l1": 0.0})]:
    c = run_case(name, {"w": wq, "b": bq}, quad, opts, steps=6)
    c["x"] = tensor_json(x)
    c["y"] = tensor_json(y)
    cases.append(c)

out = {"made_by": "tests/testdata/make_adam_fixture.py", "torch": torch.__version__,
       "cases": cases}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "adam_fixture.json")
with open(path, "w") as f:
    json.dump(out, f, indent=1)
    f.write("\n")
print("wrote", path)
