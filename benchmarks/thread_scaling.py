#!/usr/bin/python3
"""ctnn's speed-up from 1 to N threads, measured side by side.

Runs `ctnn-bench` for each model and mode at 1 thread and at N threads, alternating the two
round by round so that load from other programs hits both alike, and prints images/s of the
fastest step at each count and their ratio per round.

    /usr/bin/python3 benchmarks/thread_scaling.py --ctnn-bench build/bin/ctnn-bench --threads 2
"""

import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def bench(exe, model, mode, threads, steps, batch, env=None, precision='fp32'):
    """One run of ctnn-bench (with `env` added to the environment): images/s, mean and of the
    fastest step, and what it printed on stderr (the GEMM backend and precision lines)."""
    cmd = [exe, '--model', model, '--mode', mode, '--threads', str(threads), '--steps', str(steps),
           '--batch-size', str(batch), '--precision', precision]
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if r.returncode != 0:
        sys.exit(f'{os.path.basename(sys.argv[0])}: {" ".join(cmd)} failed ({r.returncode}):\n{r.stderr.strip()}')
    kv = dict(item.split('=', 1) for item in r.stdout.strip().splitlines()[-1].split())
    return float(kv['images_per_s']), float(kv['images_per_s_best']), r.stderr.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--ctnn-bench', default=os.path.join(os.path.dirname(HERE), 'build', 'bin', 'ctnn-bench'))
    ap.add_argument('--threads', type=int, default=2, help='the thread count compared with 1 (default 2)')
    ap.add_argument('--models', default='vgg16,resnet50')
    ap.add_argument('--modes', default='train,eval')
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--steps', type=int, default=3, help='timed steps per run (default 3)')
    ap.add_argument('--batch-size', type=int, default=100)
    args = ap.parse_args()
    if args.threads < 2 or args.rounds < 1 or args.steps < 1:
        ap.error('--threads must be at least 2, --rounds and --steps at least 1')
    print('load average at start: %.2f %.2f %.2f (%d cores)' % (*os.getloadavg(), os.cpu_count()))
    backend_line = None
    for model in filter(None, args.models.split(',')):
        for mode in filter(None, args.modes.split(',')):
            ratios, one, many = [], [], []
            for _ in range(args.rounds):
                _, a, backend_line = bench(args.ctnn_bench, model, mode, 1, args.steps, args.batch_size)
                _, b, _ = bench(args.ctnn_bench, model, mode, args.threads, args.steps, args.batch_size)
                one.append(a)
                many.append(b)
                ratios.append(b / a)
            print(f'{model:9s}{mode:6s} 1 thread {max(one):7.1f} img/s, {args.threads} threads {max(many):7.1f} img/s: '
                  f'{max(many) / max(one):.2f}x (per round {min(ratios):.2f}-{max(ratios):.2f})', flush=True)
    print(backend_line)
    print('load average at the end: %.2f %.2f %.2f' % os.getloadavg())


if __name__ == '__main__':
    main()
