#!/usr/bin/env python3
"""Write the PyTorch side of ctnn's whole-network parity tests (tests/test_parity.cpp).

    /usr/bin/python3 tests/pytorch/make_parity.py OUT_DIR

CTest runs this first (test `parity_generate`) with OUT_DIR in the build tree. For each of the
assignment's networks (built by assignment_models.py exactly as the report defines them) it writes

    OUT_DIR/<model>.ckpt           torch.save(model.state_dict()): the starting point
    OUT_DIR/<model>_expected.pt    torch.save of a dict of tensors:
        x, labels                  a fixed batch of N images (NCHW) and their labels (int64)
        logits_eval                eval-mode logits of the checkpoint's network
        logits_train, loss         train-mode logits and CrossEntropyLoss, dropout disabled (p = 0)
        grad.<key>                 every parameter's gradient of that loss
        after.<key>                every state_dict entry after one Adam(lr=1e-3) step (parameters,
                                   and the running statistics that the training forward updated)
    OUT_DIR/<model>_float64.pt     the training step's logits, loss and gradients computed in
                                   float64 (stored as float32): how far float32 itself is from
                                   exact arithmetic, which test_parity.cpp uses to state its
                                   training-mode tolerances
    OUT_DIR/<model>_bf16.pt        logits_eval, logits_train, loss and grad.<key> of the same
                                   evaluation and training step under torch.autocast("cpu",
                                   torch.bfloat16), for ctnn's bf16 policy, and
                                   autocast_conv_sums_fp32 (1 or 0: autocast_probe.py)
    OUT_DIR/<model>_batch100.pt    x, labels (100 images), logits_eval, and the training-mode
                                   forward's logits_train and loss, with logits_train64 and loss64
                                   from the same forward in float64

and, for the reader's format tests, a few small files in the forms PyTorch writes:

    format_plain.ckpt, format_keep_vars.ckpt (Parameters: _rebuild_parameter),
    format_protocol4.ckpt (pickle protocol 4), format_views.pt (tensors sharing one storage at
    offsets and strides, 0-d, empty, int64, expanded), format_many.pt (1,500 entries: SETITEMS
    batches and LONG_BINPUT), format_legacy.ckpt (_use_new_zipfile_serialization=False),
    format_torchscript.pt (torch.jit.save).

The checkpoint is not the bare initialisation: BatchNorm affine parameters, VGG's conv biases and
the running statistics are moved off their initial values first, so that a reader or network that
ignored any of them would give different logits.

Everything is deterministic: fixed seeds, one thread. If PyTorch is missing, the script writes
OUT_DIR/SKIPPED with the reason and exits with 77 (CTest's SKIP_RETURN_CODE for this test); old
outputs are removed first in any case, so nothing stale is ever compared.
"""

import collections
import os

import parity_common

BATCH = 4
BATCH_FULL = 100


def main():
    out_dir, torch, MODELS = parity_common.start('make_parity.py', fresh=True)
    import torch.nn as nn
    from autocast_probe import autocast_conv_sums_fp32

    def out(name):
        return os.path.join(out_dir, name)

    def without_dropout(model):
        """Dropout's p set to 0: deterministic training steps, comparable with ctnn's."""
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = 0.0

    def perturb(model, seed):
        """Moves every BatchNorm affine parameter, VGG's zero conv biases and the running
        statistics off their initial values (two training-mode forwards on random data)."""
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_((torch.rand(m.bias.shape, generator=g) - 0.5) * 0.4)
                elif isinstance(m, nn.Conv2d) and not m.bias.abs().sum():
                    m.bias.copy_((torch.rand(m.bias.shape, generator=g) - 0.5) * 0.1)
            model.train()
            for _ in range(2):
                model(torch.randn(8, 3, 32, 32, generator=g))

    for seed, name in enumerate(['vgg16', 'resnet50'], start=1):
        torch.manual_seed(seed)
        model = MODELS[name]()
        perturb(model, 100 + seed)
        torch.save(model.state_dict(), out(name + '.ckpt'))

        g = torch.Generator().manual_seed(200 + seed)
        x = torch.randn(BATCH, 3, 32, 32, generator=g)
        labels = torch.randint(0, 10, (BATCH,), generator=g)
        expected = collections.OrderedDict(x=x, labels=labels)

        model.eval()
        with torch.no_grad():
            expected['logits_eval'] = model(x)

        model.train()
        without_dropout(model)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        optimizer.zero_grad()
        logits = model(x)
        loss = nn.CrossEntropyLoss()(logits, labels)
        loss.backward()
        expected['logits_train'] = logits.detach()
        expected['loss'] = loss.detach()
        for key, p in model.named_parameters():
            expected['grad.' + key] = p.grad.detach().clone()
        optimizer.step()
        for key, t in model.state_dict().items():
            expected['after.' + key] = t.detach().clone()
        torch.save(expected, out(name + '_expected.pt'))

        # The same training step in float64: how far float32 itself is from exact arithmetic.
        model64 = MODELS[name]().double()
        model64.load_state_dict(torch.load(out(name + '.ckpt')))
        model64.train()
        without_dropout(model64)
        logits64 = model64(x.double())
        loss64 = nn.CrossEntropyLoss()(logits64, labels)
        loss64.backward()
        reference = collections.OrderedDict(logits_train=logits64.detach().float(), loss=loss64.detach().float())
        for key, p in model64.named_parameters():
            reference['grad.' + key] = p.grad.detach().float()
        torch.save(reference, out(name + '_float64.pt'))

        # The same evaluation and training step under torch.autocast("cpu", torch.bfloat16), from
        # the same checkpoint: what ctnn's bf16 policy is compared with (test_parity.cpp).
        model16 = MODELS[name]()
        model16.load_state_dict(torch.load(out(name + '.ckpt')))
        without_dropout(model16)
        bf16 = collections.OrderedDict()
        bf16['autocast_conv_sums_fp32'] = torch.tensor([int(autocast_conv_sums_fp32())])
        model16.eval()
        with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
            bf16['logits_eval'] = model16(x).float()
        model16.train()
        with torch.autocast('cpu', dtype=torch.bfloat16):
            logits16 = model16(x).float()
            loss16 = nn.CrossEntropyLoss()(logits16, labels)
        loss16.backward()
        bf16['logits_train'] = logits16.detach()
        bf16['loss'] = loss16.detach()
        for key, p in model16.named_parameters():
            bf16['grad.' + key] = p.grad.detach().clone()
        torch.save(bf16, out(name + '_bf16.pt'))

        # The assignment's batch of 100, forward only (check_train_step.py repeats ctnn's
        # step on it, on ctnn's activation pattern): evaluation logits, and the training
        # forward's logits and loss with their float64 counterparts; the schedules a batch of 4
        # does not reach (chunks of images, Winograd's parts, products cut over threads).
        g100 = torch.Generator().manual_seed(300 + seed)
        x100 = torch.randn(BATCH_FULL, 3, 32, 32, generator=g100)
        labels100 = torch.randint(0, 10, (BATCH_FULL,), generator=g100)
        full = collections.OrderedDict(x=x100, labels=labels100)
        for dtype in (torch.float32, torch.float64):
            m = MODELS[name]().to(dtype)
            m.load_state_dict(torch.load(out(name + '.ckpt')))
            suffix = '' if dtype == torch.float32 else '64'
            with torch.no_grad():
                if dtype == torch.float32:
                    m.eval()
                    full['logits_eval'] = m(x100)
                m.train()
                without_dropout(m)
                logits_full = m(x100.to(dtype))
                full['logits_train' + suffix] = logits_full.float()
                full['loss' + suffix] = nn.CrossEntropyLoss()(logits_full, labels100).float()
        torch.save(full, out(name + '_batch100.pt'))
        print('%s: %d state_dict entries, loss %.6f -> %s' % (name, len(model.state_dict()), loss.item(), out_dir))

    # The forms of file the reader must accept (and two it must refuse with a clear message).
    torch.manual_seed(7)
    small = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    small[1].running_mean.uniform_()
    small[1].num_batches_tracked.fill_(5)
    torch.save(small.state_dict(), out('format_plain.ckpt'))
    torch.save(small.state_dict(keep_vars=True), out('format_keep_vars.ckpt'))
    torch.save(small.state_dict(), out('format_protocol4.ckpt'), pickle_protocol=4)
    torch.save(small.state_dict(), out('format_legacy.ckpt'), _use_new_zipfile_serialization=False)
    torch.jit.save(torch.jit.script(small), out('format_torchscript.pt'))
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    torch.save(collections.OrderedDict([
        ('base', base), ('row', base[1]), ('column', base[:, 2]), ('transposed', base.t()),
        ('block', base[1:3, 2:5]), ('scalar', torch.tensor(3.5)), ('int64', torch.arange(-2, 3)),
        ('empty', torch.zeros(0, 3)), ('expanded', torch.tensor([1.0, 2.0]).expand(3, 2)),
    ]), out('format_views.pt'))
    torch.save(collections.OrderedDict(('t%d' % i, torch.full((2,), float(i))) for i in range(1500)),
               out('format_many.pt'))


if __name__ == '__main__':
    main()
