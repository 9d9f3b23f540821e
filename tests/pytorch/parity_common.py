"""What the parity check scripts share: argument handling, the skip when PyTorch is missing,
and a failure collector."""

import os
import sys

SKIP = 77  # CTest's SKIP_RETURN_CODE for these scripts


def start(script):
    """Returns (output directory, torch, the assignment's MODELS); exits 77 without PyTorch."""
    if len(sys.argv) != 2:
        sys.exit('usage: %s DIR' % script)
    try:
        import torch
    except ImportError:
        print('SKIPPED: PyTorch is not installed (apt-get install python3-torch)')
        sys.exit(SKIP)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from assignment_models import MODELS
    torch.set_num_threads(1)
    return sys.argv[1], torch, MODELS


class Checks:
    """Collects failed checks, printing each; finish() exits 1 if there was any."""

    def __init__(self):
        self.failures = []

    def __call__(self, ok, what):
        if not ok:
            self.failures.append(what)
            print('FAIL: ' + what)

    def finish(self):
        if self.failures:
            sys.exit(1)
