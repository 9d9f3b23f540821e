#!/usr/bin/env python3
"""Write the seed corpus of fuzz_checkpoint: small real files as torch.save writes them.

    /usr/bin/python3 benchmarks/fuzz/make_seed_corpus.py SEED_DIR

Each seed is a few kilobytes (libFuzzer's default maximum input length follows the largest seed),
covering the forms the reader meets: plain state_dicts with BatchNorm buffers, Parameters
(keep_vars=True), pickle protocol 4, tensors sharing one storage at offsets and strides, 0-d,
empty and int64 tensors, more than 256 memo entries, a dict that is not a state_dict, the
legacy format and a TorchScript archive.
"""

import collections
import os
import sys

import torch
import torch.nn as nn

out_dir = sys.argv[1]
os.makedirs(out_dir, exist_ok=True)
torch.manual_seed(0)


def save(name, obj, **kwargs):
    torch.save(obj, os.path.join(out_dir, name), **kwargs)


small = nn.Sequential(nn.Conv2d(1, 2, 2), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 2))
save('conv_bn_linear.ckpt', small.state_dict())
save('keep_vars.ckpt', small.state_dict(keep_vars=True))
save('protocol4.ckpt', small.state_dict(), pickle_protocol=4)
save('legacy.ckpt', small.state_dict(), _use_new_zipfile_serialization=False)
base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
save('views.pt', collections.OrderedDict([
    ('base', base), ('row', base[1]), ('column', base[:, 1]), ('transposed', base.t()), ('scalar', torch.tensor(2.5)),
    ('int64', torch.arange(3)), ('empty', torch.zeros(0, 2)), ('expanded', torch.ones(1).expand(3))]))
shared = torch.arange(60, dtype=torch.float32)  # 60 views of one storage: memo indices past 255
save('memo.pt', collections.OrderedDict(('k%d' % i, shared[i]) for i in range(60)))
save('not_state_dict.pt', {'epoch': 3, 'lr': 0.001, 'weights': torch.ones(2)})
torch.jit.save(torch.jit.script(nn.Linear(2, 1)), os.path.join(out_dir, 'torchscript.pt'))
for name in sorted(os.listdir(out_dir)):
    print('%6d %s' % (os.path.getsize(os.path.join(out_dir, name)), name))
