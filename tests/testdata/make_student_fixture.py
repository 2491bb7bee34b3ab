#!/usr/bin/python3
"""Reference values for tests/nodes/student_node_test.cpp: RD4AD's student written in PyTorch as
the paper's code has it (hq-deng/RD4AD resnet.py BN_layer + de_resnet.py), independently of the
C++ modules.

Run from the repository root with Debian's python (torch 1.13 + torchvision 0.14):
    /usr/bin/python3 tests/testdata/make_student_fixture.py
Writes tests/testdata/student_rd4ad_fixture.txt:
  count <arch> <parameters without bn.conv4/bn4> <RD4AD's total, with its unused bn.conv4/bn.bn4>
  state <name> <shape>              resnet18 bn.* and decoder.* state_dict entries (conv4/bn4 left out)
  size / level lines                resnet18 forward of a synthetic pyramid with formula weights
                                    (FormulaValue() in the C++ test), as in make_backbone_fixture.py
"""
import math
import os

import numpy as np
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1, conv3x3

HERE = os.path.dirname(os.path.abspath(__file__))
SAMPLES = 200


# ---- RD4AD (MIT licence), the parts the student uses ----------------------------------------
class BN_layer(nn.Module):
    def __init__(self, block, layers, width_per_group=64):
        super().__init__()
        norm_layer = nn.BatchNorm2d
        self._norm_layer = norm_layer
        self.groups = 1
        self.base_width = width_per_group
        self.inplanes = 256 * block.expansion
        self.dilation = 1
        self.bn_layer = self._make_layer(block, 512, layers, stride=2)
        self.conv1 = conv3x3(64 * block.expansion, 128 * block.expansion, 2)
        self.bn1 = norm_layer(128 * block.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(128 * block.expansion, 256 * block.expansion, 2)
        self.bn2 = norm_layer(256 * block.expansion)
        self.conv3 = conv3x3(128 * block.expansion, 256 * block.expansion, 2)
        self.bn3 = norm_layer(256 * block.expansion)
        self.conv4 = conv1x1(1024 * block.expansion, 512 * block.expansion, 1)  # unused in forward
        self.bn4 = norm_layer(512 * block.expansion)

    def _make_layer(self, block, planes, blocks, stride=1):
        norm_layer = self._norm_layer
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(conv1x1(self.inplanes * 3, planes * block.expansion, stride),
                                       norm_layer(planes * block.expansion))
        layers = [block(self.inplanes * 3, planes, stride, downsample, self.groups, self.base_width,
                        self.dilation, norm_layer)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, groups=self.groups, base_width=self.base_width,
                                dilation=self.dilation, norm_layer=norm_layer))
        return nn.Sequential(*layers)

    def forward(self, x):
        l1 = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x[0]))))))
        l2 = self.relu(self.bn3(self.conv3(x[1])))
        feature = torch.cat([l1, l2, x[2]], 1)
        return self.bn_layer(feature).contiguous()


def deconv2x2(in_planes, out_planes, stride=1):
    return nn.ConvTranspose2d(in_planes, out_planes, kernel_size=2, stride=stride, bias=False)


class DeBasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, upsample=None, base_width=64):
        super().__init__()
        self.conv1 = deconv2x2(inplanes, planes, stride) if stride == 2 else conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.upsample = upsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.upsample is not None:
            identity = self.upsample(x)
        out += identity
        return self.relu(out)


class DeBottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, upsample=None, base_width=64):
        super().__init__()
        width = int(planes * (base_width / 64.0))
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = deconv2x2(width, width, stride) if stride == 2 else conv3x3(width, width, stride)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.upsample = upsample

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.upsample is not None:
            identity = self.upsample(x)
        out += identity
        return self.relu(out)


class DeResNet(nn.Module):
    def __init__(self, block, layers, width_per_group=64):
        super().__init__()
        self.inplanes = 512 * block.expansion
        self.base_width = width_per_group
        self.layer1 = self._make_layer(block, 256, layers[0], stride=2)
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 64, layers[2], stride=2)

    def _make_layer(self, block, planes, blocks, stride=1):
        upsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            upsample = nn.Sequential(deconv2x2(self.inplanes, planes * block.expansion, stride),
                                     nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, upsample, base_width=self.base_width)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, base_width=self.base_width))
        return nn.Sequential(*layers)

    def forward(self, x):
        a = self.layer1(x)
        b = self.layer2(a)
        c = self.layer3(b)
        return [c, b, a]


def rd4ad(arch):
    if arch == "resnet18":
        return BN_layer(BasicBlock, 2), DeResNet(DeBasicBlock, [2, 2, 2, 2])
    if arch == "resnet34":
        return BN_layer(BasicBlock, 2), DeResNet(DeBasicBlock, [3, 4, 6, 3])
    if arch == "resnet50":
        return BN_layer(Bottleneck, 3), DeResNet(DeBottleneck, [3, 4, 6, 3])
    if arch == "wide_resnet50_2":
        return BN_layer(Bottleneck, 3, 128), DeResNet(DeBottleneck, [3, 4, 6, 3], 128)
    raise ValueError(arch)


# ---- deterministic values, reproduced by the C++ test --------------------------------------
def formula_state(state):
    """Tensor k of the state (in order) gets FormulaValue(name, shape, k, i) at flat index i."""
    out = {}
    for k, (name, t) in enumerate(state.items()):
        i = np.arange(t.numel(), dtype=np.float64)
        s = np.sin(0.37 * i + 1.3 * k)
        if name.endswith("num_batches_tracked"):
            v = np.zeros_like(i)
        elif name.endswith("running_var"):
            v = 1.0 + 0.25 * (1.0 + s)
        elif t.dim() == 1 and name.endswith(".weight"):  # BatchNorm gamma
            v = 1.0 + 0.1 * s
        elif t.dim() == 4:
            v = s * math.sqrt(1.0 / (t.numel() / t.shape[0]))
        else:  # BatchNorm beta, running_mean
            v = 0.1 * s
        out[name] = torch.from_numpy(v.astype(np.float32)).reshape(t.shape).to(t.dtype)
    return out


def formula_input(c, h, w, j):
    i = np.arange(c * h * w, dtype=np.float64)
    return torch.from_numpy((0.5 * (1.0 + np.sin(0.1 * i + j))).astype(np.float32)).reshape(1, c, h, w)


def sample_indices(numel):
    return [(k * 2654435761) % numel for k in range(SAMPLES)]


def main():
    torch.set_grad_enabled(False)
    lines = ["# RD4AD student reference, made by make_student_fixture.py (torch %s)" % torch.__version__]
    for arch in ["resnet18", "resnet34", "resnet50", "wide_resnet50_2"]:
        bn, dec = rd4ad(arch)
        total = sum(p.numel() for p in list(bn.parameters()) + list(dec.parameters()))
        unused = sum(p.numel() for p in list(bn.conv4.parameters()) + list(bn.bn4.parameters()))
        lines.append("count %s %d %d" % (arch, total - unused, total))

    bn, dec = rd4ad("resnet18")
    state = {}
    for prefix, m in [("bn.", bn), ("decoder.", dec)]:
        for k, v in m.state_dict().items():
            if not k.startswith(("conv4.", "bn4.")):
                state[prefix + k] = v
    for k, v in state.items():
        lines.append("state %s %s" % (k, "x".join(str(d) for d in v.shape) or "scalar"))

    values = formula_state(state)
    bn.load_state_dict({k[3:]: v for k, v in values.items() if k.startswith("bn.")}, strict=False)
    dec.load_state_dict({k[8:]: v for k, v in values.items() if k.startswith("decoder.")})
    bn.eval()
    dec.eval()
    h, w = 16, 24  # layer1 size of a 64 x 96 image
    pyramid = [formula_input(64, h, w, 0), formula_input(128, h // 2, w // 2, 1), formula_input(256, h // 4, w // 4, 2)]
    out = dec(bn(pyramid))
    lines.append("size %d %d" % (h * 4, w * 4))
    for j, x in enumerate(out):
        v = x.double()
        lines.append("level %d %d %d %d %.9g %.9g" % (j, x.shape[1], x.shape[2], x.shape[3], v.mean(), v.std()))
        flat = x.flatten()
        for i in sample_indices(flat.numel()):
            lines.append("%d %.9g" % (i, flat[i]))
    with open(os.path.join(HERE, "student_rd4ad_fixture.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
