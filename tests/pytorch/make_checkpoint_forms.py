#!/usr/bin/env python3
"""Write checkpoints the ways training scripts and tutorials save them, for ctnn's reader tests
(README "PyTorch checkpoints", issue 16's table; tests/test_checkpoint_forms.cpp and the ctnn-eval
tests in tests/CMakeLists.txt):

    /usr/bin/python3 tests/pytorch/make_checkpoint_forms.py OUT_DIR

A small network with ctnn's test layout (Conv2d(3, 4, 3, 1, 1), BatchNorm2d(4), ReLU,
MaxPool2d(2, 2), Flatten, Linear(16, 10): keys 0.*, 1.*, 5.*), after one Adam step, saved as

    small_plain.ckpt          torch.save(model.state_dict()): the values every form must give
    small_tutorial.ckpt       {'epoch', 'model_state_dict', 'optimizer_state_dict', 'loss'}
    small_two_models.ckpt     {'model': sd, 'ema': sd of another model}: needs a key
    small_dataparallel.ckpt   nn.DataParallel(model).state_dict(): keys 'module.*'
    small_dataparallel_tutorial.ckpt  the tutorial dict around the DataParallel state_dict
    small_compiled.ckpt       keys '_orig_mod.*', as torch.compile's module gives them (written
                              by hand when this PyTorch has no torch.compile)
    small_half.ckpt, small_bfloat16.ckpt, small_float64.ckpt
                              model.half() / .bfloat16() / .double() state_dicts (the float64 one
                              with values float32 cannot hold), each with small_<dtype>_expected.ckpt:
                              PyTorch's own .float() of every tensor, which ctnn must reproduce
    small_counter_int32.ckpt  num_batches_tracked as int32
    small_int_weight.ckpt     5.bias as int64: must be refused, naming the key
    small_legacy.ckpt         _use_new_zipfile_serialization=False: refused
    small_whole_model.ckpt    torch.save(model): a pickled module, refused

and the assignment's ResNet50_layer4 as the issue tried it with ctnn-eval: resnet50_plain.ckpt,
resnet50_tutorial.ckpt (with Adam's state_dict: floats, bools, None), resnet50_dataparallel.ckpt,
resnet50_half.ckpt and resnet50_half_expected.ckpt (PyTorch's .float() of the half tensors).

Deterministic (fixed seeds, one thread). Without PyTorch it writes OUT_DIR/SKIPPED and exits 77
(CTest's SKIP_RETURN_CODE); old outputs are removed first in any case.
"""

import collections
import copy
import os

import parity_common


def main():
    out_dir, torch, MODELS = parity_common.start('make_checkpoint_forms.py', fresh=True)
    import torch.nn as nn

    def out(name):
        return os.path.join(out_dir, name)

    def small_net(seed):
        torch.manual_seed(seed)
        return nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2, 2), nn.Flatten(),
                             nn.Linear(16, 10))

    def adam_step(model, seed):
        """One training step, so that weights, BatchNorm statistics and Adam's state are all set."""
        g = torch.Generator().manual_seed(seed)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        x = torch.randn(6, 3, 4, 4, generator=g)
        labels = torch.randint(0, 10, (6,), generator=g)
        loss = nn.CrossEntropyLoss()(model(x), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return optimizer, loss.item()

    def tutorial(sd, optimizer, loss):
        return {'epoch': 3, 'model_state_dict': sd, 'optimizer_state_dict': optimizer.state_dict(), 'loss': loss}

    def floats_of(sd):
        """PyTorch's own conversion of every floating tensor to float32."""
        return collections.OrderedDict((k, v.float() if v.is_floating_point() else v) for k, v in sd.items())

    model = small_net(11)
    optimizer, loss = adam_step(model, 12)
    sd = model.state_dict()
    torch.save(sd, out('small_plain.ckpt'))
    torch.save(tutorial(sd, optimizer, loss), out('small_tutorial.ckpt'))
    other = small_net(13)
    adam_step(other, 14)
    torch.save({'model': sd, 'ema': other.state_dict()}, out('small_two_models.ckpt'))
    torch.save(other.state_dict(), out('small_ema_plain.ckpt'))

    parallel = nn.DataParallel(model).state_dict()
    assert all(k.startswith('module.') for k in parallel), 'DataParallel did not prefix its keys'
    torch.save(parallel, out('small_dataparallel.ckpt'))
    torch.save(tutorial(parallel, optimizer, loss), out('small_dataparallel_tutorial.ckpt'))
    compiled = None
    if hasattr(torch, 'compile'):
        try:
            compiled = torch.compile(model).state_dict()
        except Exception:  # no compiler toolchain for dynamo here: fall back to the names alone
            compiled = None
    if compiled is None:
        compiled = collections.OrderedDict(('_orig_mod.' + k, v) for k, v in sd.items())
    torch.save(compiled, out('small_compiled.ckpt'))

    for name, convert in (('half', lambda m: m.half()), ('bfloat16', lambda m: m.bfloat16()),
                          ('float64', lambda m: m.double())):
        converted = convert(copy.deepcopy(model))
        if name == 'float64':
            g = torch.Generator().manual_seed(15)
            with torch.no_grad():  # digits float32 cannot hold, so that rounding matters
                for t in converted.state_dict().values():
                    if t.is_floating_point():
                        t.add_(torch.randn(t.shape, generator=g, dtype=torch.float64) * 1e-9)
        csd = converted.state_dict()
        torch.save(csd, out('small_%s.ckpt' % name))
        torch.save(floats_of(csd), out('small_%s_expected.ckpt' % name))

    counter = collections.OrderedDict(sd)
    counter['1.num_batches_tracked'] = counter['1.num_batches_tracked'].int()
    torch.save(counter, out('small_counter_int32.ckpt'))
    ints = collections.OrderedDict(sd)
    ints['5.bias'] = torch.arange(10)
    torch.save(ints, out('small_int_weight.ckpt'))
    torch.save(sd, out('small_legacy.ckpt'), _use_new_zipfile_serialization=False)
    torch.save(model, out('small_whole_model.ckpt'))

    # PyTorch itself loads the nested and prefixed forms as the README's table says.
    check = small_net(16)
    check.load_state_dict(torch.load(out('small_tutorial.ckpt'))['model_state_dict'])
    check.load_state_dict(torch.load(out('small_half.ckpt')))

    # The assignment's ResNet50_layer4, as the issue tried it.
    torch.manual_seed(21)
    resnet = MODELS['resnet50']()
    g = torch.Generator().manual_seed(22)
    with torch.no_grad():  # running statistics off their initial values
        resnet.train()
        resnet(torch.randn(4, 3, 32, 32, generator=g))
    rsd = resnet.state_dict()
    torch.save(rsd, out('resnet50_plain.ckpt'))
    adam = torch.optim.Adam(resnet.parameters(), lr=1e-3)
    torch.save(tutorial(rsd, adam, 2.3), out('resnet50_tutorial.ckpt'))
    torch.save(nn.DataParallel(resnet).state_dict(), out('resnet50_dataparallel.ckpt'))
    half = copy.deepcopy(resnet).half().state_dict()
    torch.save(half, out('resnet50_half.ckpt'))
    torch.save(floats_of(half), out('resnet50_half_expected.ckpt'))
    print('checkpoint forms (PyTorch %s) -> %s' % (torch.__version__, out_dir))


if __name__ == '__main__':
    main()
