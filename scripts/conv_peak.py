#!/usr/bin/python3
"""How fast can this CPU run the convolutions fmam trains, at best? Times oneDNN's bfloat16 3x3
convolutions (forward, and backward for the input's and the weight's gradients) at the shapes of
the RD4AD student and teacher, batch 16, in channels_last (oneDNN's fastest layout here) and NCHW
(training's), median of 7 after 2 warm-ups; prints GFLOP/s (a multiply-add counts 2, as fmam's
counters do). The ceiling that fmam train's "GFLOP/s" is measured against (docs/PERFORMANCE.md,
"Training's arithmetic"). A measurement, not a test:
  /usr/bin/python3 scripts/conv_peak.py [threads]     # default 2
"""
import statistics, sys, time
import torch

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(threads)
SHAPES = [(64, 64), (128, 32), (256, 16), (512, 8)]  # (channels, side): layer1..3 and the bottleneck


def rates(c, side, fmt):
    x = torch.randn(16, c, side, side).to(torch.bfloat16).to(memory_format=fmt).requires_grad_()
    conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(torch.bfloat16).to(memory_format=fmt)
    flop = 2.0 * 16 * c * side * side * c * 9
    fwd, bwd = [], []
    for i in range(9):
        t0 = time.perf_counter()
        y = conv(x)
        t1 = time.perf_counter()
        y.backward(torch.ones_like(y))
        t2 = time.perf_counter()
        if i >= 2:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    return flop / statistics.median(fwd) / 1e9, 2 * flop / statistics.median(bwd) / 1e9


for layout, fmt in (("channels_last", torch.channels_last), ("NCHW", torch.contiguous_format)):
    print(f"threads {threads}, batch 16, bfloat16, {layout}, 3x3 stride 1")
    for c, side in SHAPES:
        f, b = rates(c, side, fmt)
        print(f"{c:4d} ch {side:3d}^2: forward {f:6.0f} GFLOP/s, backward (input + weight) {b:6.0f} GFLOP/s")
