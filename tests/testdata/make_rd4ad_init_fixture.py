#!/usr/bin/python3
"""Initial-weight statistics of the official RD4AD student (hq-deng/RD4AD resnet.py BN_layer +
de_resnet.py de_resnet18, as main.py builds them), for tests/nodes/student_node_test.cpp: fmam
draws from its own generator, so values differ, but every tensor's distribution must match.

Run from the repository root with Debian's python (torch 1.13), the official sources beside the
repository in ../shared/tools/peer/rd4ad:
    /usr/bin/python3 tests/testdata/make_rd4ad_init_fixture.py
Writes tests/testdata/rd4ad_init_fixture.txt, one line per learned tensor (BatchNorm running
statistics and the unused bn.conv4/bn.bn4 left out):  <name> <numel> <mean> <std>
"""
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
RD4AD = os.path.join(HERE, '..', '..', '..', 'shared', 'tools', 'peer', 'rd4ad')


def main():
    sys.path.insert(0, os.path.abspath(RD4AD))
    import de_resnet
    import resnet
    torch.manual_seed(111)  # main.py's setup_seed(111)
    _, bn = resnet.resnet18(pretrained=False)
    decoder = de_resnet.de_resnet18(pretrained=False)
    lines = ['# RD4AD student init statistics, made by make_rd4ad_init_fixture.py (torch %s)' % torch.__version__]
    for prefix, net in (('bn', bn), ('decoder', decoder)):
        for name, p in net.named_parameters():
            if prefix == 'bn' and name.startswith(('conv4.', 'bn4.')):
                continue
            p = p.detach().double()
            lines.append('%s.%s %d %.8g %.8g' % (prefix, name, p.numel(), p.mean().item(), p.std().item()))
    with open(os.path.join(HERE, 'rd4ad_init_fixture.txt'), 'w') as f:
        f.write('\n'.join(lines) + '\n')


if __name__ == '__main__':
    main()
