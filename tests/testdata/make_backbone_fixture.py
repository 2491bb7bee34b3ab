#!/usr/bin/python3
"""Reference values for tests/nodes/backbone_node_test.cpp, from torchvision itself.

Run from the repository root with Debian's python (the one that has torch 1.13 + torchvision 0.14):
    /usr/bin/python3 tests/testdata/make_backbone_fixture.py
Writes (both small, both deterministic):
  tests/testdata/backbone_resnet18_fixture.txt   torchvision resnet18 layer1..3 on a synthetic image
                                                 (two sizes): per level shape, mean, std and sampled values
  tests/testdata/backbone_ordereddict_state.pth  a tiny model.state_dict() saved as Python saves it
                                                 (an OrderedDict with _metadata), as torchvision's downloads are
"""
import collections
import os

import numpy as np
import torch
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
WEIGHTS = os.path.join("..", "shared", "weights", "resnet18_imagenet1k_v1_to_layer3.pth")
SIZES = [(256, 256), (67, 93)]  # (H, W); the odd one checks the convs' rounding
SAMPLES = 200


def test_image(h, w):
    """[1, 3, h, w] float32, reproduced bit for bit by SyntheticImage() in the C++ test."""
    c, y, x = np.meshgrid(np.arange(3), np.arange(h), np.arange(w), indexing="ij")
    a = ((y // 8) * 5 + (x // 8) * 3 + c) % 7
    b = (y * x + c) % 13
    img = (a.astype(np.float32) / np.float32(3) - np.float32(1)) + b.astype(np.float32) / np.float32(26)
    return torch.from_numpy(img.astype(np.float32))[None]


def sample_indices(numel):
    """The same flat NCHW indices as SampleIndex() in the C++ test."""
    return [(k * 2654435761) % numel for k in range(SAMPLES)]


def main():
    torch.set_grad_enabled(False)
    sd = torch.load(WEIGHTS)
    model = torchvision.models.resnet18()
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert all(k.startswith(("layer4.", "fc.")) for k in missing) and not unexpected, (missing, unexpected)
    model.eval()
    lines = ["# torchvision %s resnet18 + %s, layer1..layer3 outputs; made by make_backbone_fixture.py"
             % (torchvision.__version__, os.path.basename(WEIGHTS))]
    for h, w in SIZES:
        x = test_image(h, w)
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        lines.append("size %d %d" % (h, w))
        for j, layer in enumerate([model.layer1, model.layer2, model.layer3]):
            x = layer(x)
            v = x.double()
            lines.append("level %d %d %d %d %.9g %.9g" % (j, x.shape[1], x.shape[2], x.shape[3], v.mean(), v.std()))
            flat = x.flatten()
            for i in sample_indices(flat.numel()):
                lines.append("%d %.9g" % (i, flat[i]))
    with open(os.path.join(HERE, "backbone_resnet18_fixture.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")

    # A real model.state_dict(): OrderedDict with _metadata, int64 num_batches_tracked.
    m = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3))
    m[0].weight.copy_(torch.arange(6, dtype=torch.float32).reshape(3, 2, 1, 1) * 0.5)
    m[0].bias.copy_(torch.tensor([1.0, 2.0, 3.0]))
    m[1].running_var.copy_(torch.tensor([0.25, 0.5, 4.0]))
    m[1].num_batches_tracked.fill_(7)
    state = m.state_dict()
    assert isinstance(state, collections.OrderedDict) and hasattr(state, "_metadata")
    torch.save(state, os.path.join(HERE, "backbone_ordereddict_state.pth"))


if __name__ == "__main__":
    main()
