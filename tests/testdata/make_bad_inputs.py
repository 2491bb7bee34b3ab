#!/usr/bin/env python3
"""Writes tests/testdata/bad_inputs/: a small corpus of image files a user (or an attacker) may
put in an input folder, for tests/apps/bad_input_test.cpp. Each bad file must be reported by name
and skipped; each good one scored. Run from the repo root: /usr/bin/python3 tests/testdata/make_bad_inputs.py
(python3-pil, numpy). A folder and a broken symbolic link named like images are made by the test
itself (git keeps neither an empty folder nor, portably, a dangling link).

  good.png, photo.jpg     64x48 colour pattern: scored
  gray16.png              16-bit grayscale: scored (decoded to 8-bit)
  rgba.png                with an alpha channel: scored (alpha dropped)
  ünïcødé_画像.png        a non-ASCII file name: scored
  cut_png.png             good.png cut in half (no IEND): "truncated PNG"
  cut_jpeg.jpg            a JPEG cut at 60% (no end-of-image marker): "truncated JPEG"
  damaged_jpeg.jpg        the same cut, closed with an end-of-image marker: "damaged JPEG" (libjpeg's
                          "premature end of data segment"; OpenCV used to score it, half grey)
  damaged_png.png         good.png with a byte of its pixel data flipped: "damaged PNG" (IDAT's CRC)
  empty.png               0 bytes: "the file is empty"
  huge_header.png         a valid PNG whose header claims 60000x60000: refused before decoding
  not_an_image.jpg        text: "not a PNG, JPEG, ..."
  dicom_like.png          134 bytes found by tests/fuzz/image_decode_fuzzer.cpp: "DICM" at offset 128
                          made OpenCV hand it to GDCM, whose assert() aborted the whole process
"""
import base64
import io
import os
import struct
import zlib

import numpy as np
from PIL import Image

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'bad_inputs')
os.makedirs(OUT, exist_ok=True)


def path(name):
    return os.path.join(OUT, name)


def png_bytes(img):
    b = io.BytesIO()
    img.save(b, format='PNG')
    return b.getvalue()


y, x = np.mgrid[0:48, 0:64]
rgb = np.stack([(x * 4) % 256, (y * 5) % 256, ((x + y) * 3) % 256], axis=-1).astype(np.uint8)
good = Image.fromarray(rgb, 'RGB')
good.save(path('good.png'))
good.save(path('photo.jpg'), quality=90)
Image.fromarray((x * 1000 + y * 10).astype(np.uint16)).save(path('gray16.png'))
Image.fromarray(np.dstack([rgb, np.full((48, 64), 128, np.uint8)]), 'RGBA').save(path('rgba.png'))
good.save(path('ünïcødé_画像.png'))

b = png_bytes(good)
open(path('cut_png.png'), 'wb').write(b[:len(b) // 2])
# A JPEG of noise, so the cut falls inside the scan's entropy-coded data.
noise = np.random.RandomState(0).randint(0, 256, (128, 128, 3)).astype(np.uint8)
j = io.BytesIO()
Image.fromarray(noise, 'RGB').save(j, format='JPEG', quality=90)
jb = j.getvalue()
open(path('cut_jpeg.jpg'), 'wb').write(jb[:int(len(jb) * 0.6)])
# Complete files damaged inside: the JPEG's scan cut at 60% and closed with an end-of-image
# marker (libjpeg: "premature end of data segment", the rest grey); good.png with one byte of its
# pixel data flipped (the IDAT chunk fails its CRC).
open(path('damaged_jpeg.jpg'), 'wb').write(jb[:int(len(jb) * 0.6)] + b'\xff\xd9')
pb = bytearray(b)
pb[b.index(b'IDAT') + 20] ^= 0x40
open(path('damaged_png.png'), 'wb').write(bytes(pb))
open(path('empty.png'), 'wb').close()


def chunk(kind, data):
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data) & 0xffffffff)


ihdr = struct.pack('>IIBBBBB', 60000, 60000, 8, 2, 0, 0, 0)
huge = b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(b'\0' * 64)) + chunk(b'IEND', b'')
open(path('huge_header.png'), 'wb').write(huge)
open(path('not_an_image.jpg'), 'w').write('this is not a jpeg\n')
open(path('dicom_like.png'), 'wb').write(base64.b64decode(
    'iVBOzs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7Ozs7OAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'
    'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAzs7Ozs5HDQoaCgAAAEAAAElFTkRESUNNCYI='))
print('wrote', sorted(os.listdir(OUT)))
