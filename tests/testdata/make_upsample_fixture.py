#!/usr/bin/python3
# Writes tests/testdata/upsample_fixture.txt: torch.nn.functional.interpolate(mode="bilinear")
# results that tests/nodes/upsample_sum_node_test.cpp compares UpsampleSum against.
# Run once with Debian's python (it has torch 1.13):  /usr/bin/python3 tests/testdata/make_upsample_fixture.py
# Format: blocks of "<name> <rows> <cols>" followed by one line of rows*cols values (row-major, %.9g).
import os

import torch
import torch.nn.functional as F

OUT_H, OUT_W = 7, 9  # non-square on purpose
levels = [
    torch.sin(torch.arange(15, dtype=torch.float32) * 0.7).reshape(1, 1, 3, 5) + 1.0,
    torch.cos(torch.arange(8, dtype=torch.float32) * 1.3).reshape(1, 1, 2, 4) + 1.5,
]
down = (torch.arange(16, dtype=torch.float32) ** 1.5).reshape(1, 1, 4, 4) / 10.0


def up(x, h, w, ac):
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=ac)


blocks = [("level0", levels[0]), ("level1", levels[1]), ("down_in", down)]
for ac in (True, False):
    tag = "ac1" if ac else "ac0"
    blocks.append((f"level0_up_{tag}", up(levels[0], OUT_H, OUT_W, ac)))
    blocks.append((f"sum_{tag}", sum(up(l, OUT_H, OUT_W, ac) for l in levels)))
    prod = torch.ones(1, 1, OUT_H, OUT_W)
    for l in levels:
        prod = prod * up(l, OUT_H, OUT_W, ac)
    blocks.append((f"product_{tag}", prod))
    blocks.append((f"down_{tag}", up(down, 3, 2, ac)))  # downsampling, odd ratio

path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "upsample_fixture.txt")
with open(path, "w") as f:
    f.write(f"# made by make_upsample_fixture.py with torch {torch.__version__}\n")
    for name, t in blocks:
        t = t[0, 0]
        f.write(f"{name} {t.shape[0]} {t.shape[1]}\n")
        f.write(" ".join("%.9g" % v for v in t.flatten().tolist()) + "\n")
print("wrote", path)
