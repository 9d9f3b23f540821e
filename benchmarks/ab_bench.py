#!/usr/bin/python3
"""Two builds (or two settings) of ctnn side by side: before against after.

Runs `ctnn-bench` A and `ctnn-bench` B on the same model, mode and thread count, round after
round, A first in odd rounds and B first in even ones, so that a slow minute of a shared VM
falls on both alike. A change's effect is the median of the per-round ratios B / A of each
run's mean images/s, with the count of rounds B won: one run of each proves little where other
tenants move a 2-core VM's speed by 10-30 % within minutes. Keep a copy of the binary before the
change (`cp build/bin/ctnn-bench /tmp/ctnn-bench.before`), rebuild, then:

    /usr/bin/python3 benchmarks/ab_bench.py --a /tmp/ctnn-bench.before --b build/bin/ctnn-bench --rounds 6

Or one binary under two settings (each `--env-*` a comma-separated list of NAME=VALUE):

    /usr/bin/python3 benchmarks/ab_bench.py --env-a CTNN_GEMM=eigen --env-b CTNN_GEMM=openblas
"""

import argparse
import os
import statistics

from thread_scaling import HERE, bench


def parse_env(text, ap):
    env = {}
    for item in filter(None, text.split(',')):
        name, sep, value = item.partition('=')
        if not sep or not name:
            ap.error(f'--env-a / --env-b: {item!r} is not NAME=VALUE')
        env[name] = value
    return env


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    default_exe = os.path.join(os.path.dirname(HERE), 'build', 'bin', 'ctnn-bench')
    ap.add_argument('--a', default=default_exe, help='ctnn-bench before (default build/bin/ctnn-bench)')
    ap.add_argument('--b', default=default_exe, help='ctnn-bench after (default build/bin/ctnn-bench)')
    ap.add_argument('--env-a', default='', help='NAME=VALUE,... set for A only')
    ap.add_argument('--env-b', default='', help='NAME=VALUE,... set for B only')
    ap.add_argument('--models', default='vgg16,resnet50')
    ap.add_argument('--modes', default='train,eval')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--rounds', type=int, default=6)
    ap.add_argument('--steps', type=int, default=0,
                    help='timed steps per run (default 0: 6 for training, 30 for evaluation)')
    ap.add_argument('--batch-size', type=int, default=100)
    ap.add_argument('--precision', choices=['fp32', 'bf16'], default='fp32', help='of both sides (default fp32)')
    args = ap.parse_args()
    if args.threads < 1 or args.rounds < 1 or args.steps < 0:
        ap.error('--threads and --rounds must be at least 1, --steps at least 0')
    sides = [(args.a, parse_env(args.env_a, ap)), (args.b, parse_env(args.env_b, ap))]
    for exe, _ in sides:
        if not os.access(exe, os.X_OK):
            ap.error(f'{exe}: not an executable file')
    if sides[0] == sides[1]:
        ap.error('A and B are the same binary with the same settings: give --a/--b or --env-a/--env-b')
    print('load average at start: %.2f %.2f %.2f (%d cores)' % (*os.getloadavg(), os.cpu_count()))
    said = ({}, {})  # per side: the texts ctnn-bench printed on stderr (a dict as an ordered set)
    for model in filter(None, args.models.split(',')):
        for mode in filter(None, args.modes.split(',')):
            steps = args.steps or (6 if mode == 'train' else 30)
            runs = ([], [])  # per side: (mean, best) images/s of each round
            for r in range(args.rounds):
                for side in ((0, 1) if r % 2 == 0 else (1, 0)):
                    exe, env = sides[side]
                    mean, best, line = bench(exe, model, mode, args.threads, steps, args.batch_size, env, args.precision)
                    runs[side].append((mean, best))
                    said[side].setdefault(line)
            ratios = [b[0] / a[0] for a, b in zip(*runs)]
            a_mean = statistics.median(m for m, _ in runs[0])
            b_mean = statistics.median(m for m, _ in runs[1])
            best_ratio = max(b for _, b in runs[1]) / max(b for _, b in runs[0])
            wins = sum(x > 1 for x in ratios)
            print(f'{model:9s}{mode:6s} A {a_mean:7.1f} img/s, B {b_mean:7.1f} (medians of the runs\' means): '
                  f'B/A {statistics.median(ratios):.3f}, per round {min(ratios):.3f}-{max(ratios):.3f}, '
                  f'B faster in {wins} of {len(ratios)}; best steps {best_ratio:.3f}', flush=True)
    for name, lines in zip('AB', said):
        for line in lines:
            print(f'{name}: ' + line.replace('\n', f'\n{name}: '))
    print('load average at the end: %.2f %.2f %.2f' % os.getloadavg())


if __name__ == '__main__':
    main()
