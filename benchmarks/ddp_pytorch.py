#!/usr/bin/python3
"""PyTorch's DistributedDataParallel on the assignment's networks: the reference for ctnn-bench-dist.

Trains the assignment's exact models (tests/pytorch/assignment_models.py) with Adam on a
synthetic global batch, as ctnn-bench-dist does: `--procs N` processes on this machine, gloo
backend, each with `--threads` threads and its 1/N share of the batch (BatchNorm per process, as
DDP does by default; --sync-bn converts it to SyncBatchNorm, which gloo supports on CPU only
from PyTorch 2.x, so it may fail here). Prints one key=value line like ctnn-bench-dist's.

    /usr/bin/python3 benchmarks/ddp_pytorch.py --model resnet50 --procs 2 --threads 1
    /usr/bin/python3 benchmarks/ddp_pytorch.py --model resnet50 --procs 1 --threads 2
"""

import argparse
import os
import statistics
import sys
import time

# OpenBLAS (PyTorch's Linear layers only) on one thread, as compare_pytorch.py gives it and ctnn
# sets its own: its pool spins after each call, taking a core from the OpenMP threads. Read when
# the library loads, so before torch is imported here or in the spawned workers.
os.environ['OPENBLAS_NUM_THREADS'] = '1'

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), 'tests', 'pytorch'))


def worker(rank, args):
    import torch
    import torch.distributed as dist
    import torch.nn as nn
    from assignment_models import MODELS
    torch.set_num_threads(args.threads)
    os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
    os.environ.setdefault('MASTER_PORT', str(args.port))
    dist.init_process_group('gloo', rank=rank, world_size=args.procs)
    torch.manual_seed(1)
    model = MODELS[args.model]()
    if args.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    ddp = nn.parallel.DistributedDataParallel(model) if args.procs > 1 else model
    share = args.batch_size // args.procs + (1 if rank < args.batch_size % args.procs else 0)
    x = torch.randn(share, 3, 32, 32)
    labels = torch.randint(0, 10, (share,))
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.Adam(ddp.parameters(), lr=1e-3)
    times = []
    for i in range(args.warmup + args.steps):
        dist.barrier()
        t0 = time.perf_counter()
        optimizer.zero_grad()
        criterion(ddp(x), labels).backward()  # DDP all-reduces the gradients in buckets during backward
        optimizer.step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    if rank == 0:
        med = statistics.median(times)
        print(f'model={args.model} procs={args.procs} threads={torch.get_num_threads()} batch={args.batch_size} '
              f'steps={len(times)} bn={"sync" if args.sync_bn else "local"} images_per_s={args.batch_size / med:.1f} '
              f'images_per_s_best={args.batch_size / min(times):.1f} step_ms_median={1e3 * med:.1f} '
              f'torch={torch.__version__}', flush=True)
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', choices=['vgg16', 'resnet50'], default='resnet50')
    p.add_argument('--procs', type=int, default=2)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--batch-size', type=int, default=100)
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--port', type=int, default=29517)
    p.add_argument('--sync-bn', action='store_true')
    args = p.parse_args()
    import torch.multiprocessing as mp
    mp.spawn(worker, args=(args,), nprocs=args.procs, join=True)


if __name__ == '__main__':
    main()
