#!/usr/bin/env python3
"""Check, in PyTorch, the checkpoints that ctnn wrote (the last step of ctnn's parity tests).

    /usr/bin/python3 tests/pytorch/check_roundtrip.py DIR

tests/test_parity.cpp leaves in DIR, for each network, `<model>_ctnn.ckpt` (ctnn's state_dict
after one Adam step) and `<model>_ctnn_logits.pt` (ctnn's eval-mode logits of that network on the
batch `x` of `<model>_expected.pt`). For each, this script checks that:

  - Python's zipfile finds every CRC correct, and every record's data starts at a multiple of 64;
  - torch.load(weights_only=True) accepts both files (only tensors and the allowed globals);
  - the assignment's PyTorch model takes the state_dict with load_state_dict(strict=True), with
    num_batches_tracked as a 0-d int64 tensor and the keys in the model's own order;
  - PyTorch's eval-mode logits of the loaded model match ctnn's to 1e-4 of their largest value.

Exits 77 (skipped) when PyTorch is not installed, 1 on any failure.
"""

import os
import struct
import zipfile

import parity_common



def main():
    out_dir, torch, MODELS = parity_common.start('check_roundtrip.py')
    check = parity_common.Checks()

    for name in ['vgg16', 'resnet50']:
        path = os.path.join(out_dir, name + '_ctnn.ckpt')
        logits_path = os.path.join(out_dir, name + '_ctnn_logits.pt')
        with zipfile.ZipFile(path) as z:
            check(z.testzip() is None, '%s: a record fails its CRC check' % path)
            with open(path, 'rb') as f:
                for info in z.infolist():
                    f.seek(info.header_offset)
                    header = f.read(30)
                    name_len, extra_len = struct.unpack('<HH', header[26:30])
                    start = info.header_offset + 30 + name_len + extra_len
                    check(start % 64 == 0, '%s: %s starts at byte %d, not 64-aligned' % (path, info.filename, start))

        state = torch.load(path, weights_only=True)
        model = MODELS[name]()
        check(list(state.keys()) == list(model.state_dict().keys()), '%s: keys differ from the model\'s order' % path)
        for key, t in state.items():
            if key.endswith('num_batches_tracked'):
                check(t.dtype == torch.int64 and t.dim() == 0, '%s: %s is not a 0-d int64 tensor' % (path, key))
        model.load_state_dict(state, strict=True)
        model.eval()

        x = torch.load(os.path.join(out_dir, name + '_expected.pt'), weights_only=True)['x']
        ctnn_logits = torch.load(logits_path, weights_only=True)['logits_eval']
        with torch.no_grad():
            logits = model(x)
        err = (logits - ctnn_logits).abs().max().item() / logits.abs().max().item()
        print('%s: PyTorch loaded ctnn\'s checkpoint (weights_only, strict); eval logits differ by %.3g of '
              'their largest value' % (name, err))
        check(err <= 1e-4, '%s: logits differ by %.3g (allowed 1e-4)' % (name, err))

    check.finish()


if __name__ == '__main__':
    main()
