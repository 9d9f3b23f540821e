"""What the PyTorch scripts of the tests share: argument handling, the skip when PyTorch is
missing, the generators' fresh output directory, and the checks' failure collector."""

import os
import shutil
import sys

SKIP = 77  # CTest's SKIP_RETURN_CODE for these scripts


def start(script, fresh=False):
    """Returns (the directory named on the command line, torch, the assignment's MODELS), torch
    set to one thread; exits 77 without PyTorch. With `fresh` (the generators) the directory is
    emptied first, so that nothing stale is ever compared, and without PyTorch a file SKIPPED
    there says why (the C++ tests that read the directory report themselves skipped)."""
    if len(sys.argv) != 2:
        sys.exit('usage: %s DIR' % script)
    out_dir = sys.argv[1]
    if fresh:
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        os.makedirs(out_dir)
    try:
        import torch
    except ImportError as e:
        if fresh:
            with open(os.path.join(out_dir, 'SKIPPED'), 'w') as f:
                f.write('PyTorch is not installed for %s (%s): apt-get install python3-torch\n' % (sys.executable, e))
        print('SKIPPED: PyTorch is not installed (apt-get install python3-torch)')
        sys.exit(SKIP)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from assignment_models import MODELS
    torch.set_num_threads(1)
    return out_dir, torch, MODELS


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
