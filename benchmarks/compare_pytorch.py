#!/usr/bin/python3
"""ctnn against PyTorch, side by side in one run, on the assignment's two networks.

Runs the same training step (zero_grad, forward, CrossEntropyLoss, backward, Adam step) and the
same eval-mode forward in PyTorch, with the assignment's exact models
(tests/pytorch/assignment_models.py), and in ctnn through `ctnn-bench`, on the same synthetic
batch size and thread count, alternating the two sides round by round (torch, ctnn, torch, ctnn,
..., and within a round each precision asked for, so that a bf16 run is compared with an fp32 run
of the same minutes). Alternating does not make load from other programs hit both alike: with as
many threads as cores, a thread that another program deschedules stalls every parallel region,
and a PyTorch step has many more, smaller ones than ctnn's (measured on a loaded 2-core VM: going
from 1 to 2 threads, PyTorch slowed 7.2x and ctnn 5.6x, a ratio 29 % too high). So measure on
an idle machine: the script samples the CPUs' busy and steal time before it starts and after each
round, and warns when anything else used more than 10 % of them. Prints, per model and mode,
the images/s of each side, the ratio ctnn/PyTorch (above 1: ctnn is faster) and each side's peak
resident memory; every PyTorch measurement runs in its own subprocess, so each side's peak is its
own. Then times every distinct convolution of both networks (forward, and backward with the input
gradient) against torch.nn.functional.conv2d, again alternating, and prints a table.

On a machine shared with other programs every figure swings; by default (--stat best) the
comparison uses each side's fastest step or call, which other programs can only slow down, so
the ratio of the two is the steadiest figure. --stat median reports typical throughput instead.

    /usr/bin/python3 benchmarks/compare_pytorch.py --threads 2 --batch-size 100 --rounds 3 \\
        --ctnn-bench build/bin/ctnn-bench

Environment: these machines may set OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE), which changes
OpenBLAS's kernels; PyTorch uses OpenBLAS for its Linear layers only (its convolutions are
oneDNN's), ctnn for its products where OpenBLAS suits the CPU. Run this script under `env -u
OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` unless that is what is measured; it prints what it found.
Both sides get the same thread count: PyTorch through torch.set_num_threads and OMP_NUM_THREADS,
ctnn through --threads. OpenBLAS gets one thread on both sides (PyTorch's subprocess:
OPENBLAS_NUM_THREADS=1; ctnn sets it itself): OpenBLAS's own pool spins for about 0.1 s after
each call, taking a core from the OpenMP threads that do the rest of the work, and the Linear
layers it would speed up are 0.1 % of VGG16's multiply-adds.
"""

import argparse
import importlib.util
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, 'tests', 'pytorch'))


# ---- PyTorch side (runs in a subprocess: `compare_pytorch.py --worker ...`) --------------------

def rss_mib(field):
    """VmRSS / VmHWM of this process, in MiB."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) / 1024.0
    return float('nan')


def blas_libraries():
    """The BLAS / oneDNN shared objects this process has loaded."""
    libs = set()
    with open('/proc/self/maps') as f:
        for line in f:
            path = line.split()[-1]
            if re.search(r'blas|mkl|dnnl|lapack', os.path.basename(path)):
                libs.add(path)
    return sorted(libs)


def worker_model(model_name, mode, batch, threads, steps, warmup, precision='fp32'):
    import contextlib
    import torch
    import torch.nn as nn
    from assignment_models import MODELS
    torch.set_num_threads(threads)
    baseline = rss_mib('VmRSS')
    torch.manual_seed(1)
    model = MODELS[model_name]()
    x = torch.randn(batch, 3, 32, 32)
    labels = torch.randint(0, 10, (batch,))

    def autocast():  # bf16: PyTorch's own mixed precision, the counterpart of ctnn's --precision bf16
        if precision == 'bf16':
            return torch.autocast('cpu', dtype=torch.bfloat16)
        return contextlib.nullcontext()
    if mode == 'train':
        model.train()
        criterion = nn.CrossEntropyLoss()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            optimizer.zero_grad()
            with autocast():
                loss = criterion(model(x), labels)
            loss.backward()
            optimizer.step()
    else:
        model.eval()

        def step():
            with torch.no_grad(), autocast():
                model(x)
    for _ in range(warmup):
        step()
    times = []
    t_all = time.perf_counter()
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - t_all
    print(json.dumps({
        'images_per_s': batch * steps / total,
        'step_ms_median': 1e3 * statistics.median(times),
        'step_ms_min': 1e3 * min(times),
        'images_per_s_best': batch / min(times),
        'peak_rss_mib': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        'import_rss_mib': baseline,
        'threads': torch.get_num_threads(),
        'torch': torch.__version__,
        'mkldnn': torch.backends.mkldnn.is_available(),
        'blas': blas_libraries(),
        'openblas_core': openblas_core(),
    }))


def openblas_core():
    """The kernels the OpenBLAS that torch loaded runs (openblas_get_corename), if any."""
    import ctypes
    for path in blas_libraries():
        if 'openblas' in os.path.basename(path):
            try:
                f = ctypes.CDLL(path).openblas_get_corename
                f.restype = ctypes.c_char_p
                return f().decode()
            except (OSError, AttributeError):
                pass
    return None


def cpu_description():
    """lscpu's model name, family/model numbers and the vector flags that matter here."""
    info = {}
    with open('/proc/cpuinfo') as f:
        for line in f:
            if ':' in line:
                k, v = (x.strip() for x in line.split(':', 1))
                info.setdefault(k, v)
            elif info:
                break
    flags = set(info.get('flags', '').split())
    vec = [x for x in ('avx2', 'fma', 'avx512f', 'avx512_bf16', 'amx_tile') if x in flags]
    return (f'{info.get("model name", "?")} (family {info.get("cpu family", "?")}, model {info.get("model", "?")}; '
            f'{" ".join(vec) or "no AVX2"})')


def distinct_convs():
    """Every distinct convolution of both networks as (Cin, Cout, K, S, P, H) -> uses per model,
    found by running each model once on a 32x32 input with forward hooks."""
    import torch
    import torch.nn as nn
    from assignment_models import MODELS
    uses = {}
    for name in ('vgg16', 'resnet50'):
        model = MODELS[name]().eval()

        def hook(module, inputs, output, name=name):
            key = (module.in_channels, module.out_channels, module.kernel_size[0], module.stride[0],
                   module.padding[0], inputs[0].shape[2])
            uses.setdefault(key, {'vgg16': 0, 'resnet50': 0})[name] += 1
        handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
        with torch.no_grad():
            model(torch.zeros(2, 3, 32, 32))
        for h in handles:
            h.remove()
    return uses


def worker_convs(batch, threads, reps, warmup):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    torch.manual_seed(2)
    results = []
    for (cin, cout, k, s, p, h), uses in distinct_convs().items():
        x = torch.randn(batch, cin, h, h, requires_grad=True)
        w = torch.randn(cout, cin, k, k, requires_grad=True)
        b = torch.randn(cout, requires_grad=True)
        fwd, bwd = [], []
        for i in range(warmup + reps):
            t0 = time.perf_counter()
            y = F.conv2d(x, w, b, stride=s, padding=p)
            t1 = time.perf_counter()
            if i == 0:
                dy = torch.randn_like(y)
            t2 = time.perf_counter()
            torch.autograd.grad(y, (x, w, b), dy)
            t3 = time.perf_counter()
            if i >= warmup:
                fwd.append(t1 - t0)
                bwd.append(t3 - t2)
        results.append({'conv': f'{cin},{cout},{k},{s},{p},{h}', 'uses': uses,
                        'fwd_ms': 1e3 * statistics.median(fwd), 'bwd_ms': 1e3 * statistics.median(bwd),
                        'fwd_ms_min': 1e3 * min(fwd), 'bwd_ms_min': 1e3 * min(bwd)})
    print(json.dumps(results))


# ---- driver ----------------------------------------------------------------------------------

def run(cmd, env=None):
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f'compare_pytorch.py: {" ".join(cmd)} failed ({r.returncode}):\n{r.stderr.strip()}')
    return r.stdout


def torch_env(threads):
    env = dict(os.environ)
    env['OMP_NUM_THREADS'] = str(threads)
    env['OPENBLAS_NUM_THREADS'] = '1'  # (the module's docstring says why)
    return env


def cpu_times():
    """(busy, steal, total) jiffies of all CPUs, from /proc/stat."""
    with open('/proc/stat') as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)
    steal = v[7] if len(v) > 7 else 0
    total = sum(v[:8])
    return total - idle - steal, steal, total


def check_idle(when, seconds=1.0):
    """Samples the CPUs for `seconds` with nothing of ours running and says how busy they were."""
    b0, s0, t0 = cpu_times()
    time.sleep(seconds)
    b1, s1, t1 = cpu_times()
    total = max(t1 - t0, 1)
    busy, steal = (b1 - b0) / total, (s1 - s0) / total
    note = f'  CPUs {when}: {busy:.0%} busy with other programs, {steal:.0%} stolen by the hypervisor'
    if busy + steal > 0.10:
        note += '  WARNING: not idle; the ratios below lean towards ctnn (see the docstring)'
    print(note, flush=True)


def parse_kv(line):
    return dict(item.split('=', 1) for item in line.split())


def compare_models(args):
    results = {}
    info = None
    for model in args.models:
        for mode in args.modes:
            steps = args.train_steps if mode == 'train' else args.eval_steps
            torch_runs = {p: [] for p in args.precisions}
            ctnn_runs = {p: [] for p in args.precisions}
            for rnd in range(args.rounds):
                for precision in args.precisions:
                    out = run([sys.executable, __file__, '--worker', 'model', '--model', model, '--mode', mode,
                               '--batch-size', str(args.batch_size), '--threads', str(args.threads),
                               '--steps', str(steps), '--warmup', str(args.warmup), '--precisions', precision],
                              env=torch_env(args.threads))
                    t = json.loads(out.strip().splitlines()[-1])
                    info = info or t
                    torch_runs[precision].append(t)
                    line = f'  round {rnd + 1}: {model:8s} {mode:5s} {precision} images/s mean (best step): ' \
                           f'torch {t["images_per_s"]:6.1f} ({t["images_per_s_best"]:6.1f})'
                    for gemm in args.gemm:
                        c = parse_kv(run([args.ctnn_bench, '--model', model, '--mode', mode, '--batch-size',
                                          str(args.batch_size), '--threads', str(args.threads), '--steps', str(steps),
                                          '--warmup', str(args.warmup), '--gemm', gemm, '--precision', precision]
                                         ).strip().splitlines()[-1])
                        ctnn_runs[precision].append(c)
                        line += f'   ctnn[{gemm}] {float(c["images_per_s"]):6.1f} ({float(c["images_per_s_best"]):6.1f})'
                    print(line, flush=True)
                check_idle(f'after round {rnd + 1}', 0.5)
            for precision in args.precisions:
                for i, gemm in enumerate(args.gemm):
                    results[(model, mode, gemm, precision)] = (torch_runs[precision],
                                                               ctnn_runs[precision][i::len(args.gemm)])
    return results, info


def rate(runs, args):
    """A side's images/s over its rounds: the fastest step (--stat best) or the median round's mean."""
    if args.stat == 'best':
        return max(float(r['images_per_s_best']) for r in runs)
    return statistics.median(float(r['images_per_s']) for r in runs)


def print_model_table(results, args):
    what = ('the fastest step of all rounds' if args.stat == 'best'
            else f'the median over {args.rounds} rounds of each round\'s mean throughput')
    print(f'\nWhole networks: batch {args.batch_size}, {args.threads} thread(s), {args.rounds} alternating rounds; '
          f'images/s from {what}; ratio = ctnn / PyTorch (above 1: ctnn faster); per-round: range of the '
          'ratio of each round\'s mean throughputs')
    print(f'{"model":9s}{"mode":6s}{"prec":5s}{"ctnn gemm":>10s}{"torch img/s":>12s}{"ctnn img/s":>12s}{"ratio":>8s}'
          f'{"per-round":>18s}{"ctnn GFLOP/s":>14s}{"torch peak MiB":>16s}{"(import)":>10s}{"ctnn peak MiB":>15s}')
    for (model, mode, gemm, precision), (tr, cr) in results.items():
        t, c = rate(tr, args), rate(cr, args)
        per_round = [float(b['images_per_s']) / a['images_per_s'] for a, b in zip(tr, cr)]
        gflops = c * float(cr[0]['gflop_per_image'])
        tpeak = max(r['peak_rss_mib'] for r in tr)
        timport = statistics.median(r['import_rss_mib'] for r in tr)
        cpeak = max(float(r['peak_rss_mib']) for r in cr)
        gemm = f'{gemm}:{cr[0]["gemm"]}' if gemm == 'auto' else gemm
        print(f'{model:9s}{mode:6s}{precision:5s}{gemm:>10s}{t:12.1f}{c:12.1f}{c / t:8.2f}{min(per_round):9.2f}-{max(per_round):<8.2f}'
              f'{gflops:14.1f}{tpeak:16.0f}{timport:10.0f}{cpeak:15.0f}')
    print('(torch peak includes the Python interpreter and torch itself: "(import)" is the resident size '
          'right after importing torch)')
    # ctnn in bf16 against PyTorch in fp32 (issue 14's measure): the runs of each round were made
    # one after the other, so the per-round ratios pair runs of the same minutes.
    for (model, mode, gemm, precision), (tr, cr) in results.items():
        if precision != 'bf16' or (model, mode, gemm, 'fp32') not in results:
            continue
        tr32 = results[(model, mode, gemm, 'fp32')][0]
        ratio = rate(cr, args) / rate(tr32, args)
        per_round = [float(b['images_per_s']) / a['images_per_s'] for a, b in zip(tr32, cr)]
        print(f'{model:9s}{mode:6s}ctnn bf16 [{gemm}] / torch fp32: {ratio:.2f} (per round '
              f'{min(per_round):.2f}-{max(per_round):.2f})')
        # And against ctnn's own fp32 (issue 14's measure on a CPU without AMX).
        cr32 = results[(model, mode, gemm, 'fp32')][1]
        own = [float(b['images_per_s']) / float(a['images_per_s']) for a, b in zip(cr32, cr)]
        print(f'{model:9s}{mode:6s}ctnn bf16 [{gemm}] / ctnn fp32: {rate(cr, args) / rate(cr32, args):.2f} (per round '
              f'{min(own):.2f}-{max(own):.2f})')


def compare_convs(args):
    listing = run([args.ctnn_bench, '--list-convs'])
    ctnn_uses = {}
    for line in listing.splitlines():
        if line and not line.startswith('#'):
            shape, v, r = line.split()
            ctnn_uses[shape] = {'vgg16': int(v), 'resnet50': int(r)}
    torch_ms, ctnn_ms = {}, {}
    torch_uses = None
    for rnd in range(args.rounds):
        out = run([sys.executable, __file__, '--worker', 'convs', '--batch-size', str(args.batch_size),
                   '--threads', str(args.threads), '--steps', str(args.conv_reps), '--warmup', '1'],
                  env=torch_env(args.threads))
        rows = json.loads(out.strip().splitlines()[-1])
        torch_uses = {r['conv']: r['uses'] for r in rows}
        suffix = '_min' if args.stat == 'best' else ''
        for r in rows:
            torch_ms.setdefault(r['conv'], []).append((r['fwd_ms' + suffix], r['bwd_ms' + suffix]))
        out = run([args.ctnn_bench, '--conv', 'all', '--batch-size', str(args.batch_size), '--threads',
                   str(args.threads), '--steps', str(args.conv_reps), '--warmup', '1'])
        for line in out.splitlines():
            kv = parse_kv(line)
            ctnn_ms.setdefault(kv['conv'], []).append((float(kv['fwd_ms' + suffix]), float(kv['bwd_ms' + suffix])))
        print(f'  round {rnd + 1}: convolutions timed on both sides', flush=True)
    if torch_uses != ctnn_uses:
        print('WARNING: the convolutions of the PyTorch models and of ctnn differ:\n'
              f'  only in PyTorch: {sorted(set(torch_uses) - set(ctnn_uses))}\n'
              f'  only in ctnn:    {sorted(set(ctnn_uses) - set(torch_uses))}\n'
              f'  use counts differ: {[k for k in torch_uses if k in ctnn_uses and torch_uses[k] != ctnn_uses[k]]}')
    return torch_ms, ctnn_ms, torch_uses


def print_conv_table(torch_ms, ctnn_ms, uses, args):
    what = 'fastest' if args.stat == 'best' else 'median'
    print(f'\nConvolutions: batch {args.batch_size}, {args.threads} thread(s), ms per call, {what} of '
          f'{args.rounds} rounds x {args.conv_reps} reps; backward includes the input gradient; '
          'ratio = PyTorch ms / ctnn ms (above 1: ctnn faster)')
    pick = min if args.stat == 'best' else statistics.median
    print(f'{"Cin,Cout,K,S,P,H":20s}{"uses V/R":>9s}{"torch fwd":>10s}{"ctnn fwd":>10s}{"ratio":>7s}'
          f'{"torch bwd":>11s}{"ctnn bwd":>10s}{"ratio":>7s}{"ctnn GFLOP/s f/b":>18s}')
    totals = {m: [0.0, 0.0, 0.0, 0.0] for m in ('vgg16', 'resnet50')}  # torch f, b, ctnn f, b
    for shape in uses:
        if shape not in ctnn_ms:
            continue
        tf = pick(f for f, _ in torch_ms[shape])
        tb = pick(b for _, b in torch_ms[shape])
        cf = pick(f for f, _ in ctnn_ms[shape])
        cb = pick(b for _, b in ctnn_ms[shape])
        cin, cout, k, s, p, h = map(int, shape.split(','))
        ho = (h + 2 * p - k) // s + 1
        flop = 2.0 * args.batch_size * cout * ho * ho * cin * k * k
        u = uses[shape]
        for m in totals:
            for i, v in enumerate((tf, tb, cf, cb)):
                totals[m][i] += u[m] * v
        print(f'{shape:20s}{u["vgg16"]:>4d}/{u["resnet50"]:<4d}{tf:10.2f}{cf:10.2f}{tf / cf:7.2f}'
              f'{tb:11.2f}{cb:10.2f}{tb / cb:7.2f}{flop / cf * 1e-6:10.0f}/{2 * flop / cb * 1e-6:<7.0f}')
    for m, (tf, tb, cf, cb) in totals.items():
        print(f'{m:9s} all convolutions, weighted by uses: torch {tf:.0f} + {tb:.0f} ms, ctnn {cf:.0f} + {cb:.0f} ms '
              f'(fwd + bwd); ratio fwd {tf / cf:.2f}, bwd {tb / cb:.2f}, total {(tf + tb) / (cf + cb):.2f}')
    return totals


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--batch-size', type=int, default=100)
    ap.add_argument('--rounds', type=int, default=3, help='alternating rounds per side (default 3)')
    ap.add_argument('--models', default='vgg16,resnet50', help='comma-separated: vgg16, resnet50')
    ap.add_argument('--modes', default='train,eval', help='comma-separated: train, eval')
    ap.add_argument('--ctnn-bench', default=os.path.join(REPO, 'build', 'bin', 'ctnn-bench'))
    ap.add_argument('--gemm', default='auto',
                    help='comma-separated ctnn GEMM backends to run each round: auto (chosen by the CPU), '
                         'eigen, openblas (default auto; e.g. auto,eigen adds the Eigen-only figures)')
    ap.add_argument('--train-steps', type=int, default=5, help='timed training steps per round (default 5)')
    ap.add_argument('--eval-steps', type=int, default=10, help='timed eval batches per round (default 10)')
    ap.add_argument('--warmup', type=int, default=2, help='untimed steps before timing (default 2)')
    ap.add_argument('--conv-reps', type=int, default=3, help='timed calls per convolution per round (default 3)')
    ap.add_argument('--stat', choices=['best', 'median'], default='best',
                    help='best (default): fastest step / call, least disturbed by other programs; '
                         'median: typical throughput')
    ap.add_argument('--precisions', default='fp32',
                    help='comma-separated: fp32, bf16 (PyTorch: torch.autocast("cpu", torch.bfloat16); '
                         'ctnn: --precision bf16)')
    ap.add_argument('--no-convs', action='store_true', help='skip the per-convolution table')
    ap.add_argument('--no-models', action='store_true', help='skip the whole-network comparison')
    # Internal: the PyTorch side, run in a subprocess.
    ap.add_argument('--worker', choices=['model', 'convs'], help=argparse.SUPPRESS)
    ap.add_argument('--model', help=argparse.SUPPRESS)
    ap.add_argument('--mode', help=argparse.SUPPRESS)
    ap.add_argument('--steps', type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker == 'model':
        return worker_model(args.model, args.mode, args.batch_size, args.threads, args.steps, args.warmup,
                            args.precisions)
    if args.worker == 'convs':
        return worker_convs(args.batch_size, args.threads, args.steps, args.warmup)

    args.models = [m for m in args.models.split(',') if m]
    args.modes = [m for m in args.modes.split(',') if m]
    args.gemm = [g for g in args.gemm.split(',') if g]
    args.precisions = [p for p in args.precisions.split(',') if p]
    if not args.precisions or any(p not in ('fp32', 'bf16') for p in args.precisions):
        ap.error('--precisions takes fp32 and bf16, comma-separated')
    bad = [m for m in args.models if m not in ('vgg16', 'resnet50')] + \
          [m for m in args.modes if m not in ('train', 'eval')]
    if bad:
        ap.error(f'unknown model or mode: {", ".join(bad)}')
    if not args.gemm or any(g not in ('auto', 'eigen', 'openblas') for g in args.gemm):
        ap.error('--gemm takes auto, eigen and openblas, comma-separated')
    if min(args.threads, args.batch_size, args.rounds, args.train_steps, args.eval_steps, args.conv_reps) < 1:
        ap.error('--threads, --batch-size, --rounds and the step counts must be at least 1')
    if importlib.util.find_spec('torch') is None:
        ap.error(f'{sys.executable} cannot import torch: run this script with Debian\'s /usr/bin/python3 '
                 '(package python3-torch)')
    if not os.access(args.ctnn_bench, os.X_OK):
        ap.error(f'no ctnn-bench at {args.ctnn_bench}: build it (cmake --build build --target ctnn-bench) '
                 'or pass --ctnn-bench PATH')

    print(f'compare_pytorch.py: threads={args.threads} batch={args.batch_size} rounds={args.rounds} '
          f'stat={args.stat} ctnn-bench={args.ctnn_bench}')
    print('  load average at start: %.2f %.2f %.2f (%d cores)' % (*os.getloadavg(), os.cpu_count()))
    print(f'  CPU: {cpu_description()}')
    r = subprocess.run([args.ctnn_bench, '--list-convs'], capture_output=True, text=True)
    print('  ' + next((l for l in r.stderr.splitlines() if 'GEMM:' in l), 'ctnn-bench printed no GEMM line'))
    for var in ('OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE'):
        state = f'set to {os.environ[var]!r}' if var in os.environ else 'unset'
        print(f'  {var} {state}')
    if 'OPENBLAS_CORETYPE' in os.environ:
        print('  note: OPENBLAS_CORETYPE changes OpenBLAS\'s kernels (PyTorch\'s Linear layers, ctnn\'s products '
              'where it takes OpenBLAS); run under `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` unless that is meant')
    check_idle('before the first round')

    if not args.no_models:
        results, info = compare_models(args)
        print(f'PyTorch {info["torch"]}, {info["threads"]} thread(s), mkldnn={info["mkldnn"]}, '
              f'loaded: {", ".join(os.path.basename(p) for p in info["blas"]) or "no BLAS"}'
              f'{", OpenBLAS core " + info["openblas_core"] if info.get("openblas_core") else ""}')
        print_model_table(results, args)
    if not args.no_convs:
        torch_ms, ctnn_ms, uses = compare_convs(args)
        conv_totals = print_conv_table(torch_ms, ctnn_ms, uses, args)
        pick_step = min if args.stat == 'best' else statistics.median
        if not args.no_models and 'train' in args.modes:
            print('\nConvolutions (weighted sums above) within a whole training step:')
            key = 'step_ms_min' if args.stat == 'best' else 'step_ms_median'
            for (model, mode, gemm, precision), (tr, cr) in results.items():
                if mode != 'train' or gemm != args.gemm[0] or precision != 'fp32':
                    continue
                t_step = pick_step(r[key] for r in tr)
                c_step = pick_step(float(r[key]) for r in cr)
                tf, tb, cf, cb = conv_totals[model]
                print(f'  {model:9s} torch: convolutions {tf + tb:.0f} of a {t_step:.0f} ms step ({(tf + tb) / t_step:.0%}); '
                      f'ctnn: convolutions {cf + cb:.0f} of a {c_step:.0f} ms step ({(cf + cb) / c_step:.0%})')
    print('load average at the end: %.2f %.2f %.2f' % os.getloadavg())


if __name__ == '__main__':
    main()
