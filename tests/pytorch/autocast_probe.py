"""Whether torch.autocast("cpu", torch.bfloat16) sums a convolution's products in fp32.

ctnn's bf16 policy (and oneDNN's on a CPU with AVX512_BF16 or AMX) rounds the operands to bf16
and sums in fp32. Debian's PyTorch 1.13 on a CPU without them sums convolutions in bf16
(Linear still in fp32): 1 + 3 * 2^-8 gives 1.0 where fp32 sums give 1.015625. Such results are
no reference for ctnn's at the precision its tests ask (make_golden.py, make_parity.py)."""


def autocast_conv_sums_fp32():
    import torch

    x = torch.tensor([1.0, 2.0 ** -8, 2.0 ** -8, 2.0 ** -8]).reshape(1, 4, 1, 1)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        y = torch.nn.functional.conv2d(x, torch.ones(1, 4, 1, 1))
    return y.float().item() != 1.0
