#!/usr/bin/python3
"""Is int8 worth it on this CPU? Times the frozen teacher (torchvision ResNet-18 conv1..layer3,
the shared ImageNet weights) at batch 4, 256x256, 2 threads, in fp32, bf16 (weights and
activations in bfloat16, channels_last: oneDNN's AVX512-BF16/AMX path) and int8 (FX post-training
static quantization with the 'onednn' engine, calibrated on 16 bottle train images), alternated,
medians; prints each mode's layer3 cosine similarity to fp32 (what the anomaly map is made of).
A measurement for docs/PERFORMANCE.md, not a test.
  /usr/bin/python3 scripts/int8_probe.py ../shared
"""
import glob, statistics, sys, time
import numpy as np, torch, torchvision
from PIL import Image
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

shared = sys.argv[1] if len(sys.argv) > 1 else "../shared"
torch.set_num_threads(2)
torch.manual_seed(0)


class Teacher(torch.nn.Module):
    def __init__(self):
        super().__init__()
        r = torchvision.models.resnet18()
        r.load_state_dict(torch.load(f"{shared}/weights/resnet18_imagenet1k_v1_to_layer3.pth"), strict=False)
        self.stem = torch.nn.Sequential(r.conv1, r.bn1, r.relu, r.maxpool)
        self.layer1, self.layer2, self.layer3 = r.layer1, r.layer2, r.layer3

    def forward(self, x):
        a = self.layer1(self.stem(x))
        b = self.layer2(a)
        return a, b, self.layer3(b)


def images(pattern, n):
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    out = []
    for f in sorted(glob.glob(pattern))[:n]:
        a = np.asarray(Image.open(f).convert("RGB").resize((256, 256), Image.BILINEAR), np.float32) / 255
        out.append(torch.from_numpy(((a - mean) / std).transpose(2, 0, 1).astype(np.float32)))
    return torch.stack(out)


calib = images(f"{shared}/data/mvtec_ad/bottle/train/good/*.png", 16)
test = images(f"{shared}/data/mvtec_ad/bottle/test/broken_large/*.png", 4)
fp32 = Teacher().eval()
bf16 = Teacher().eval().to(memory_format=torch.channels_last).to(torch.bfloat16)
torch.backends.quantized.engine = "onednn"
prepared = prepare_fx(Teacher().eval(), get_default_qconfig_mapping("onednn"), (calib[:1],))
with torch.no_grad():
    for i in range(0, 16, 4):
        prepared(calib[i:i + 4])
int8 = convert_fx(prepared)
modes = {
    "fp32": lambda x: fp32(x),
    "bf16": lambda x: bf16(x.to(memory_format=torch.channels_last, dtype=torch.bfloat16)),
    "int8": lambda x: int8(x),
}
with torch.inference_mode():
    ref = fp32(test)[2]
    for name, f in modes.items():
        out = f(test)[2].float()
        cos = torch.nn.functional.cosine_similarity(out, ref, dim=1)
        print(f"{name}: layer3 cosine to fp32 mean {cos.mean():.5f}, min {cos.min():.5f}")
    times = {k: [] for k in modes}
    for _ in range(2):
        for f in modes.values():
            f(test)
    for _ in range(7):
        for name, f in modes.items():
            t = time.perf_counter()
            f(test)
            times[name].append((time.perf_counter() - t) * 1000 / 4)
for name, ts in times.items():
    print(f"{name}: {statistics.median(ts):.2f} ms/image (median of 7 batches of 4; {' '.join(f'{t:.1f}' for t in ts)})")
m = {k: statistics.median(v) for k, v in times.items()}
print(f"int8 / bf16 speed: {m['bf16'] / m['int8']:.2f}x; bf16 / fp32: {m['fp32'] / m['bf16']:.2f}x")
