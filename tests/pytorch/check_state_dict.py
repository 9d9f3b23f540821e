#!/usr/bin/env python3
"""Load one ctnn state_dict file into the assignment's PyTorch network, strictly.

    python3 tests/pytorch/check_state_dict.py MODEL CKPT

MODEL is vgg16 or resnet50. Checks that torch.load(weights_only=True) reads CKPT and that the
assignment's model takes it with load_state_dict(strict=True): every key, shape and dtype as
PyTorch's own. What a user does with the <model>_step<N>.ckpt of a stopped ctnn-train run.

Exits 77 (skipped) when PyTorch is not installed, 1 on any failure.
"""

import os
import sys

SKIP = 77  # CTest's SKIP_RETURN_CODE


def main():
    if len(sys.argv) != 3:
        sys.exit('usage: check_state_dict.py MODEL CKPT')
    model_name, path = sys.argv[1], sys.argv[2]
    try:
        import torch
    except ImportError:
        print('SKIPPED: PyTorch is not installed (apt-get install python3-torch)')
        sys.exit(SKIP)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from assignment_models import MODELS
    if model_name not in MODELS:
        sys.exit('unknown model %r (one of %s)' % (model_name, ', '.join(sorted(MODELS))))
    state = torch.load(path, weights_only=True)
    model = MODELS[model_name]()
    model.load_state_dict(state, strict=True)  # raises, naming missing or unexpected keys
    bad = [k for k, v in state.items() if not torch.isfinite(v.float()).all()]
    if bad:
        sys.exit('%s: non-finite values in %s' % (path, ', '.join(bad)))
    print('%s: loaded into the assignment\'s %s with load_state_dict(strict=True): %d tensors'
          % (path, model_name, len(state)))


if __name__ == '__main__':
    main()
