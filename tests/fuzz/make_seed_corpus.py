#!/usr/bin/env python3
"""Write the Python-made part of the fuzzers' seed corpus (the build runs it before ctnn_fuzz_seeds,
which adds ctnn's own files and derives the zip and pickle corpora from the checkpoints):

    /usr/bin/python3 tests/fuzz/make_seed_corpus.py SEED_DIR

SEED_DIR/pickle/python_*.pkl: what Python's own pickler writes (protocols 2 and 4: memo, frames,
every container, int widths, floats, shared and recursive values). Needs only Python.

SEED_DIR/checkpoint/pytorch_*: small real files as torch.save writes them, when this Python has
torch (otherwise they are skipped, and the script says so): plain state_dicts with BatchNorm
buffers, Parameters (keep_vars=True), pickle protocol 4, tensors sharing one storage at offsets
and strides, 0-d, empty and int64 tensors, more than 256 memo entries, a dict that is not a
state_dict, the legacy format and a TorchScript archive; nested checkpoints (a tutorial-style dict
with an optimizer's state, two models, DataParallel names), float16 / bfloat16 / float64 / int32
tensors and the plain data weights_only reads. Each is a few kilobytes (libFuzzer's
default maximum input length follows the largest seed).
"""

import collections
import os
import pickle
import sys

if len(sys.argv) != 2:
    sys.exit('usage: make_seed_corpus.py SEED_DIR')
seed_dir = sys.argv[1]
pickle_dir = os.path.join(seed_dir, 'pickle')
checkpoint_dir = os.path.join(seed_dir, 'checkpoint')
os.makedirs(pickle_dir, exist_ok=True)
os.makedirs(checkpoint_dir, exist_ok=True)

shared = [1, 2]
recursive = []
recursive.append(recursive)
values = {
    'ints': [0, 1, 255, 256, 65535, 65536, -1, -2**31, 2**31, 2**63 - 1, -2**63],
    'floats': [0.0, -0.0, 1.5, float('inf'), 1e-300],
    'text': ['', 'state_dict', 'x' * 300],
    'tuples': [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)],
    'flags': (True, False, None),
    'shared': (shared, shared),
    'nested': collections.OrderedDict([('a', {'b': [{'c': ()}]})]),
    'recursive': recursive,
}
for protocol in (2, 4):
    with open(os.path.join(pickle_dir, 'python_values_p%d.pkl' % protocol), 'wb') as f:
        pickle.dump(values, f, protocol=protocol)
    with open(os.path.join(pickle_dir, 'python_many_p%d.pkl' % protocol), 'wb') as f:
        pickle.dump({'k%d' % i: (i, 'v%d' % i) for i in range(300)}, f, protocol=protocol)  # memo past 255

try:
    import torch
    import torch.nn as nn
except ImportError:
    print('make_seed_corpus.py: this Python has no torch: PyTorch-written checkpoint seeds skipped')
    sys.exit(0)

torch.manual_seed(0)


def save(name, obj, **kwargs):
    torch.save(obj, os.path.join(checkpoint_dir, 'pytorch_' + name), **kwargs)


small = nn.Sequential(nn.Conv2d(1, 2, 2), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 2))
save('conv_bn_linear.ckpt', small.state_dict())
save('keep_vars.ckpt', small.state_dict(keep_vars=True))
save('protocol4.ckpt', small.state_dict(), pickle_protocol=4)
save('legacy.ckpt', small.state_dict(), _use_new_zipfile_serialization=False)
# The fuzzers' TinyNet state, so that loads into it succeed.
tiny = collections.OrderedDict([
    ('0.weight', torch.tensor([[0.5, -0.25], [1.5, 2.0]])), ('0.bias', torch.tensor([-1.0, 3.0])),
    ('1.running_mean', torch.tensor([0.25, -0.75])), ('1.num_batches_tracked', torch.tensor(7))])
save('tiny.ckpt', tiny)
base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
save('views.pt', collections.OrderedDict([
    ('base', base), ('row', base[1]), ('column', base[:, 1]), ('transposed', base.t()), ('scalar', torch.tensor(2.5)),
    ('int64', torch.arange(3)), ('empty', torch.zeros(0, 2)), ('expanded', torch.ones(1).expand(3))]))
shared_storage = torch.arange(60, dtype=torch.float32)  # 60 views of one storage: memo indices past 255
save('memo.pt', collections.OrderedDict(('k%d' % i, shared_storage[i]) for i in range(60)))
save('not_state_dict.pt', {'epoch': 3, 'lr': 0.001, 'weights': torch.ones(2)})
torch.jit.save(torch.jit.script(nn.Linear(2, 1)), os.path.join(checkpoint_dir, 'pytorch_torchscript.pt'))
# Checkpoints with more than a state_dict, as training scripts save them: the tutorials' dict with
# an optimizer's state after a step, DataParallel names, float16 / bfloat16 / float64 / int32
# tensors, and plain data of the kinds weights_only reads (torch.Size, device, dtype, set, bytes).
param = nn.Parameter(torch.ones(2))
adam = torch.optim.Adam([param], lr=1e-3)
param.sum().backward()
adam.step()
save('nested_tutorial.ckpt', {'epoch': 3, 'model_state_dict': tiny, 'optimizer_state_dict': adam.state_dict(),
                              'loss': 0.5})
save('nested_two_models.ckpt', {'model': tiny, 'ema': tiny})
save('dataparallel.ckpt', nn.DataParallel(small).state_dict())
save('nested_dataparallel.ckpt', {'state_dict': collections.OrderedDict(('module.' + k, v) for k, v in tiny.items())})
for dtype in (torch.float16, torch.bfloat16, torch.float64):
    save('dtype_%s.ckpt' % str(dtype).split('.')[1], collections.OrderedDict(
        (k, v.to(dtype) if v.is_floating_point() else v.int()) for k, v in tiny.items()))
save('plain_data.ckpt', {'shape': torch.Size([2, 3]), 'device': torch.device('cpu'), 'dtype': torch.float16,
                         'tags': {1, 2}, 'blob': b'\x00\xff', 'weights': tiny})
print('make_seed_corpus.py: %d PyTorch checkpoints in %s' % (
    len([n for n in os.listdir(checkpoint_dir) if n.startswith('pytorch_')]), checkpoint_dir))
