#!/usr/bin/python3
"""The official RD4AD training and evaluation (hq-deng/RD4AD, in ../shared/tools/peer/rd4ad),
run unchanged on an MVTec-layout category with the shared ResNet-18 teacher, so that fmam's
RKD can be compared with it on the same images, in the same session.

  train    main.py's train() at its settings (Adam lr 0.005, betas 0.5/0.999, batch 16,
           shuffle, last partial batch kept, fp32, loss_fucntion), for --epochs, seed --seed;
           then test.py's evaluation() (image AUROC from the map's max, pixel AUROC, and its
           per-image-mean AUPRO). Saves {bn, decoder} to --ckpt.
  export   writes an official checkpoint into an fmam model file (a model trained by fmam with
           graphs/rkd_train.json or rd4ad_train.json serves as the template: its graph,
           teacher fingerprint and sizes are kept, the student's tensors replaced), so that
           `fmam eval graphs/rkd.json --model OUT` measures the official weights with fmam's
           inference and metrics.
  evaluate evaluates the student of an fmam model file with the official evaluation().

Needs Debian's python3-torch python3-torchvision python3-scipy python3-pil python3-sklearn
python3-skimage python3-pandas. Examples (from the repository root):

  S=../shared
  /usr/bin/python3 scripts/rd4ad_official.py train --root $S/data/mpdd/metal_plate --epochs 20 --ckpt /tmp/off.pth
  /usr/bin/python3 scripts/rd4ad_official.py export --ckpt /tmp/off.pth --template rkd.fmam --out off.fmam
  /usr/bin/python3 scripts/rd4ad_official.py evaluate --root $S/data/mpdd/metal_plate --model rkd.fmam
"""
import argparse
import importlib.util
import os
import pickle
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get('FMAM_SHARED', os.path.join(HERE, '..', '..', 'shared'))


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('command', choices=['train', 'export', 'evaluate'])
    p.add_argument('--root', help='MVTec-layout category folder (train/good, test/<type>, ground_truth/<type>)')
    p.add_argument('--weights', default=os.path.join(SHARED, 'weights', 'resnet18_imagenet1k_v1_to_layer3.pth'))
    p.add_argument('--rd4ad', default=os.path.join(SHARED, 'tools', 'peer', 'rd4ad'))
    p.add_argument('--epochs', type=int, default=20)
    p.add_argument('--seed', type=int, default=111, help="main.py's setup_seed(111) by default")
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--no-eval', action='store_true', help='train: skip test.py\'s evaluation (its per-image AUPRO takes minutes)')
    p.add_argument('--ckpt', help='train: where to save {bn, decoder}; export: what to read')
    p.add_argument('--template', help='export: an fmam model file of graph rkd')
    p.add_argument('--out', help='export: the fmam model file to write')
    p.add_argument('--model', help='evaluate: an fmam model file of graph rkd')
    return p.parse_args()


args = parse()
import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(args.threads)
if 'bool' not in np.__dict__:
    np.bool = bool  # test.py's compute_pro uses np.bool, removed in numpy 1.24


class _Unused(types.ModuleType):
    """Stands in for a module that test.py imports at the top but only its visualisation uses."""

    def __getattr__(self, name):
        if name.startswith('__'):
            raise AttributeError(name)
        return _Unused(self.__name__ + '.' + name)


for _name in ('cv2', 'matplotlib'):
    if importlib.util.find_spec(_name) is None:
        sys.modules[_name] = _Unused(_name)
sys.path.insert(0, os.path.abspath(args.rd4ad))
import resnet as rd_resnet  # noqa: E402
import de_resnet as rd_de_resnet  # noqa: E402
import dataset as rd_dataset  # noqa: E402
import main as rd_main  # noqa: E402
import test as rd_test  # noqa: E402  (sys.path[0] shadows the stdlib package)


def build_models():
    encoder, bn = rd_resnet.resnet18(pretrained=False)
    state = torch.load(args.weights, map_location='cpu')
    res = encoder.load_state_dict(state, strict=False)
    bad = [k for k in res.missing_keys if not k.startswith(('layer4.', 'fc.'))]
    if bad or res.unexpected_keys:
        sys.exit('%s: teacher weights do not fit: missing %s, unexpected %s' % (args.weights, bad[:5], res.unexpected_keys[:5]))
    decoder = rd_de_resnet.de_resnet18(pretrained=False)
    encoder.eval()
    return encoder, bn, decoder


def test_loader():
    data_transform, gt_transform = rd_dataset.get_data_transforms(256, 256)
    test_data = rd_dataset.MVTecDataset(root=args.root, transform=data_transform, gt_transform=gt_transform, phase='test')
    return torch.utils.data.DataLoader(test_data, batch_size=1, shuffle=False)


def evaluate(encoder, bn, decoder):
    px, sp, pro = rd_test.evaluation(encoder, bn, decoder, test_loader(), 'cpu')
    print('official evaluation: image AUROC %.3f  pixel AUROC %.3f  AUPRO (per-image mean) %.3f' % (sp, px, pro))


def train():
    from torchvision.datasets import ImageFolder
    rd_main.setup_seed(args.seed)
    data_transform, _ = rd_dataset.get_data_transforms(256, 256)
    train_data = ImageFolder(root=os.path.join(args.root, 'train'), transform=data_transform)
    loader = torch.utils.data.DataLoader(train_data, batch_size=16, shuffle=True)
    encoder, bn, decoder = build_models()
    optimizer = torch.optim.Adam(list(decoder.parameters()) + list(bn.parameters()), lr=0.005, betas=(0.5, 0.999))
    t0 = time.time()
    for epoch in range(args.epochs):
        bn.train()
        decoder.train()
        losses = []
        for img, _ in loader:
            inputs = encoder(img)
            outputs = decoder(bn(inputs))
            loss = rd_main.loss_fucntion(inputs, outputs)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        print('epoch [%d/%d], loss:%.4f (%.0f s)' % (epoch + 1, args.epochs, np.mean(losses), time.time() - t0), flush=True)
    if args.ckpt:
        torch.save({'bn': bn.state_dict(), 'decoder': decoder.state_dict()}, args.ckpt)
    if not args.no_eval:
        evaluate(encoder, bn, decoder)


class _CppReadablePickler(pickle._Pickler):
    """libtorch's C++ unpickler (torch::pickle_load, which reads fmam's model files) knows
    SETITEMS but not SETITEM, which Python's pickler writes for a dict of one item."""

    def _batch_setitems(self, items):
        items = list(items)
        if not items:
            return
        self.write(pickle.MARK)
        for k, v in items:
            self.save(k)
            self.save(v)
        self.write(pickle.SETITEMS)


def export():
    ck = torch.load(args.ckpt, map_location='cpu')
    model = torch.load(args.template, map_location='cpu')
    tensors = model['tensors']
    mine = {k for k in tensors if k.startswith('student/')}
    theirs = {}
    for part in ('bn', 'decoder'):
        for k, v in ck[part].items():
            if part == 'bn' and k.startswith(('conv4.', 'bn4.')):
                continue  # the official BN_layer's unused conv4/bn4 (fmam leaves them out)
            theirs['student/%s.%s' % (part, k)] = v
    if set(theirs) != mine:
        sys.exit('%s does not fit %s: only official %s, only fmam %s' % (
            args.ckpt, args.template, sorted(set(theirs) - mine)[:5], sorted(mine - set(theirs))[:5]))
    for k, v in theirs.items():
        if tuple(v.shape) != tuple(tensors[k].shape):
            sys.exit('%s: %s is %s, fmam has %s' % (args.ckpt, k, tuple(v.shape), tuple(tensors[k].shape)))
        tensors[k] = v.contiguous()
    model.pop('tensors_sha256', None)  # fmam's checksum of the template's tensors, stale now
    model['threshold'] = None
    model['map_lo'] = None
    model['map_hi'] = None
    tmp = args.out + '.tmp'
    torch.save(model, tmp, pickle_module=types.SimpleNamespace(__name__="cpp_readable_pickle", Pickler=_CppReadablePickler))
    os.replace(tmp, args.out)
    print('wrote %s (official weights from %s)' % (args.out, args.ckpt))


def evaluate_fmam():
    model = torch.load(args.model, map_location='cpu')
    encoder, bn, decoder = build_models()
    for part, net in (('bn', bn), ('decoder', decoder)):
        prefix = 'student/%s.' % part
        state = {k[len(prefix):]: v for k, v in model['tensors'].items() if k.startswith(prefix)}
        res = net.load_state_dict(state, strict=False)
        bad = [k for k in res.missing_keys if not k.startswith(('conv4.', 'bn4.'))]
        if bad or res.unexpected_keys:
            sys.exit('%s: student does not fit the official %s: missing %s, unexpected %s' % (
                args.model, part, bad[:5], res.unexpected_keys[:5]))
    evaluate(encoder, bn, decoder)


if __name__ == '__main__':
    {'train': train, 'export': export, 'evaluate': evaluate_fmam}[args.command]()
