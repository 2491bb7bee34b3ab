#!/usr/bin/python3
"""Reference images for tests/nodes/pil_resize_test.cpp: Pillow's Image.resize(size, BILINEAR),
the filter torchvision's transforms.Resize applies to PIL images (RD4AD's preprocessing).

Run from the repository root with Debian's python (python3-pil, python3-numpy):
    /usr/bin/python3 tests/testdata/make_pil_resize_fixture.py
Writes tests/testdata/pil_resize/: input.png (a seeded 37x53 RGB image with edges and noise),
input_gray.png, and <W>x<H>.png for each size below (down, up, mixed, exactly 2x down, one axis).
"""
import os

import numpy as np
import PIL
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, 'pil_resize')
SIZES = [(16, 24), (80, 41), (26, 18), (53, 20), (29, 37), (7, 5)]


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(7)
    h, w = 37, 53
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // (w - 1), y * 255 // (h - 1), ((x // 6 + y // 5) % 2) * 255], -1)
    img = np.clip(base + rng.integers(-40, 41, size=(h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(img, 'RGB').save(os.path.join(OUT, 'input.png'))
    Image.fromarray(img[:, :, 0], 'L').save(os.path.join(OUT, 'input_gray.png'))
    src = Image.open(os.path.join(OUT, 'input.png')).convert('RGB')
    for size in SIZES:
        src.resize(size, Image.BILINEAR).save(os.path.join(OUT, '%dx%d.png' % size))
    gray = Image.open(os.path.join(OUT, 'input_gray.png'))
    gray.resize((16, 24), Image.BILINEAR).save(os.path.join(OUT, 'gray_16x24.png'))
    with open(os.path.join(OUT, 'README'), 'w') as f:
        f.write('Made by tests/testdata/make_pil_resize_fixture.py with Pillow %s.\n' % PIL.__version__)


if __name__ == '__main__':
    main()
