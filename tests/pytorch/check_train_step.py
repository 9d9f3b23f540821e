#!/usr/bin/env python3
"""Repeat ctnn's training step in PyTorch on ctnn's own activation pattern, and compare.

    /usr/bin/python3 tests/pytorch/check_train_step.py DIR

Why: ReLU and max pooling switch at a kink (0, or a tie). A value within rounding of a kink may
switch one way in one float32 computation and the other way in another, and the gradient of
everything before it then changes by that unit's share. In ResNet50_layer4's training step the
float32 noise of layer4 (where BatchNorm sees only 16 values per channel) flips a few units, so
PyTorch's own float32 gradients differ from its float64 ones by ~2% (L2): no comparison of two
independent runs can be tighter than that. On one and the same activation pattern, though, the
step is a smooth function, and two float32 computations of it agree to ~1e-4.

tests/test_parity.cpp leaves `<model>_ctnn_step.pt` (make_parity.py's batch of 4) and
`<model>_ctnn_step100.pt` (its batch of 100, the assignment's) in DIR, written by ctnn's checkpoint writer:
every ReLU mask ("relu.<module>", 1 where ctnn's ReLU output is > 0) and max-pool choice
("maxpool.<module>", index within the input plane), ctnn's logits and loss, every gradient
("grad.<key>") and the state after one Adam step ("after.<key>"). This script loads PyTorch's
starting checkpoint `<model>.ckpt` into the assignment's model, replaces every nn.ReLU and
nn.MaxPool2d by one that applies ctnn's recorded pattern, disables dropout, runs the same step
(CrossEntropyLoss, backward, Adam lr=1e-3) and checks:

  - the pattern is PyTorch's own up to kinks: wherever PyTorch's values would have chosen
    differently, the value is within 1e-4 of its layer's largest value of the kink, or within
    three times PyTorch's own float32 rounding error at that layer if that is larger (measured
    against PyTorch in float64 on the same pattern: after layer4's BatchNorm it is ~1e-4, and
    how much of it a CPU's kernels show varies with their summation order);
  - logits and loss within 1e-4 of the logits' largest value, or three times PyTorch's own
    float32 error if that is larger (as in test_parity.cpp);
  - every gradient within 1e-3 of its tensor's largest value (on one pattern, PyTorch's float32
    gradients differ from float64 ones by up to 3e-4 of it); the biases that BatchNorm cancels
    (exact gradient 0) are noise below 1e-3 of their layer's weight gradient, in both;
  - after the Adam step, each parameter equal up to the difference of the two libraries' moves
    lr * g / (|g| + eps) (computed from each one's gradient) plus 1e-6 |p| + 1e-9 of rounding.

Exits 77 (skipped) when PyTorch is not installed, 1 on any failure.
"""

import copy
import os

import parity_common

LR, EPS = 1e-3, 1e-8


def main():
    out_dir, torch, MODELS = parity_common.start('check_train_step.py')
    import torch.nn as nn
    check = parity_common.Checks()

    def scaled(a, b):
        return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()

    class PatternReLU(nn.Module):
        """x * mask, with ctnn's mask; records how far from 0 any value is where the own mask differs."""

        def __init__(self, mask):
            super().__init__()
            self.mask = mask
            self.flips, self.worst = 0, 0.0

        def forward(self, v):
            self.input = v.detach()
            mask = self.mask.view(v.shape)
            own = (v > 0).to(v.dtype)
            differ = own != mask
            self.flips = int(differ.sum())
            if self.flips:
                self.worst = (v[differ].abs().max() / v.abs().max()).item()
            return v * mask

    class PatternMaxPool(nn.Module):
        """Takes, in each window, the element ctnn took; records how far that is from the maximum."""

        def __init__(self, pool, index):
            super().__init__()
            self.pool, self.index = pool, index
            self.flips, self.worst = 0, 0.0

        def forward(self, v):
            self.input = v.detach()
            best, own = nn.functional.max_pool2d(v, self.pool.kernel_size, self.pool.stride, self.pool.padding,
                                                 return_indices=True)
            taken = v.flatten(2).gather(2, self.index.flatten(2)).view(best.shape)
            differ = own != self.index
            self.flips = int(differ.sum())
            if self.flips:
                self.worst = ((best - taken)[differ].max() / v.abs().max()).item()
            return taken

    def cancelled_biases(model):
        """Biases of a Conv2d/Linear directly followed by BatchNorm in a Sequential."""
        out = set()
        for prefix, module in model.named_modules():
            if isinstance(module, nn.Sequential):
                children = list(module.named_children())
                for (name, a), (_, b) in zip(children, children[1:]):
                    if isinstance(a, (nn.Conv2d, nn.Linear)) and isinstance(b, (nn.BatchNorm1d, nn.BatchNorm2d)):
                        out.add('%s.%s.bias' % (prefix, name) if prefix else name + '.bias')
        return out

    def load(file):
        return torch.load(os.path.join(out_dir, file), weights_only=True)

    # make_parity.py's batch of 4 (its float64 run in <model>_float64.pt) and the assignment's
    # batch of 100 (float64 logits beside float32 ones in <model>_batch100.pt).
    for name, batch in [('vgg16', 4), ('resnet50', 4), ('vgg16', 100), ('resnet50', 100)]:
        if batch == 4:
            ctnn, data = load(name + '_ctnn_step.pt'), load(name + '_expected.pt')
            logits64 = load(name + '_float64.pt')['logits_train']
        else:
            ctnn, data = load(name + '_ctnn_step100.pt'), load(name + '_batch100.pt')
            logits64 = data['logits_train64']
        x, labels = data['x'], data['labels']
        label = '%s, batch of %d' % (name, batch)
        model = MODELS[name]()
        model.load_state_dict(load(name + '.ckpt'))
        patterned = []
        for module_name, module in list(model.named_modules()):
            for child_name, child in list(module.named_children()):
                full = module_name + '.' + child_name if module_name else child_name
                if isinstance(child, nn.ReLU):
                    setattr(module, child_name, PatternReLU(ctnn['relu.' + full]))
                elif isinstance(child, nn.MaxPool2d):
                    setattr(module, child_name, PatternMaxPool(child, ctnn['maxpool.' + full]))
                elif isinstance(child, nn.Dropout):
                    child.p = 0.0
                else:
                    continue
                patterned.append((full, getattr(module, child_name)))
        check(sum(1 for k in ctnn if k.startswith(('relu.', 'maxpool.'))) ==
              sum(1 for _, m in patterned if not isinstance(m, nn.Dropout)),
              '%s: ctnn recorded another number of ReLU/max-pool layers' % label)

        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        optimizer.zero_grad()
        logits = model(x)
        loss = nn.CrossEntropyLoss()(logits, labels)
        loss.backward()

        # PyTorch's own float32 rounding at each kink: the same forward in float64 on the same
        # pattern (a copy taken before any weight changes), compared at every layer's input.
        model64 = copy.deepcopy(model).double()
        with torch.no_grad():
            model64(x.double())
        modules64 = dict(model64.named_modules())
        flips = sum(m.flips for _, m in patterned if not isinstance(m, nn.Dropout))
        worst_flip, worst_margin = 0.0, 0.0
        for full, m in patterned:
            if isinstance(m, nn.Dropout) or not m.flips:
                continue
            noise = scaled(m.input.double(), modules64[full].input)
            allowed = max(1e-4, 3 * noise)
            worst_flip = max(worst_flip, m.worst)
            worst_margin = max(worst_margin, m.worst / allowed)
            check(m.worst <= allowed, '%s: ctnn chose differently at a value %.3g of %s\'s scale from the kink '
                  '(allowed %.3g: PyTorch\'s own float32 error there is %.3g)' % (label, m.worst, full, allowed, noise))
        # As in test_parity.cpp: 1e-4, or three times PyTorch's own float32 error (against its
        # float64 run of make_parity.py) if that is larger: training-mode BatchNorm amplifies
        # rounding, up to ~1e-4 of the logits in ResNet.
        rtol = max(1e-4, 3 * scaled(data['logits_train'], logits64))
        e_logits = scaled(ctnn['logits_train'], logits.detach())
        check(e_logits <= rtol, '%s: logits differ by %.3g (allowed %.3g)' % (label, e_logits, rtol))
        e_loss = abs(ctnn['loss'].item() - loss.item()) / loss.item()
        check(e_loss <= rtol, '%s: loss %.7g vs %.7g' % (label, ctnn['loss'].item(), loss.item()))

        params = dict(model.named_parameters())
        cancelled = cancelled_biases(model)
        worst_grad, worst_key = 0.0, ''
        for key, p in params.items():
            g_torch, g_ctnn = p.grad, ctnn['grad.' + key]
            if key in cancelled:
                scale = params[key[:-4] + 'weight'].grad.abs().max().item()
                check(g_ctnn.abs().max().item() <= 1e-3 * scale and g_torch.abs().max().item() <= 1e-3 * scale,
                      '%s: %s is not noise' % (label, key))
                continue
            e = scaled(g_ctnn, g_torch)
            if e > worst_grad:
                worst_grad, worst_key = e, key
            check(e <= 1e-3, '%s: grad.%s differs by %.3g of its largest value' % (label, key, e))

        g_before = {key: p.grad.clone() for key, p in params.items()}
        optimizer.step()
        worst_excess = -1.0
        for key, p in params.items():
            def move(g):
                g = g.double()
                return LR * g / (g.abs() + EPS)
            allowed = (move(ctnn['grad.' + key]) - move(g_before[key])).abs() + 1e-6 * p.detach().double().abs() + 1e-9
            excess = ((ctnn['after.' + key].double() - p.detach().double()).abs() - allowed).max().item()
            worst_excess = max(worst_excess, excess)
            check(excess <= 0, '%s: after.%s differs beyond the moves\' difference by %.3g' % (label, key, excess))

        print('%s: ctnn\'s step repeated in PyTorch on ctnn\'s activation pattern (%d units where PyTorch\'s own '
              'values would choose differently, all within %.2g of the layer\'s scale from the kink, at most %.2g of the '
              'allowance): logits %.2g, '
              'loss %.2g, gradients %.2g of their tensor\'s largest value (%s); after Adam within allowance '
              '(worst margin %.3g)' % (label, flips, worst_flip, worst_margin, e_logits, e_loss, worst_grad, worst_key, worst_excess))

    check.finish()


if __name__ == '__main__':
    main()
