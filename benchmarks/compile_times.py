#!/usr/bin/env python3
"""Compile time of ctnn's translation units, one at a time, from the build's compile_commands.json.

    python3 benchmarks/compile_times.py --build build [--match examples/] [--rounds 2]

Each selected file is compiled with exactly the command CMake uses (its flags, -O3 for a Release
build), the object written to a temporary file, never into the build tree. Reported: CPU seconds
of the compiler (user + system, least disturbed by other programs on the machine) and wall
seconds, the fastest of --rounds. A benchmark, not a test: on a loaded machine the figures grow.
"""
import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time


def compile_once(entry, obj):
    if "arguments" in entry:
        args = list(entry["arguments"])
    else:
        args = shlex.split(entry["command"])
    if "-o" not in args:
        raise SystemExit(f"compile_times.py: no -o in the command for {entry['file']}")
    args[args.index("-o") + 1] = obj
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    done = subprocess.run(args, cwd=entry["directory"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"compile_times.py: {entry['file']} failed to compile:\n{done.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build", help="the CMake build directory (default: build)")
    ap.add_argument("--match", default="examples/",
                    help="compile the files whose path contains this text (default: examples/)")
    ap.add_argument("--rounds", type=int, default=1, help="compilations per file; the fastest is reported")
    a = ap.parse_args()
    db = os.path.join(a.build, "compile_commands.json")
    try:
        with open(db) as f:
            entries = json.load(f)
    except OSError as e:
        sys.exit(f"compile_times.py: cannot read {db}: {e.strerror} (configure the build with CMake first)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    chosen = {}
    for e in entries:
        rel = os.path.relpath(os.path.join(e["directory"], e["file"]), root)
        if a.match in rel:
            chosen.setdefault(rel, e)  # a file built into two targets: its first command
    if not chosen:
        sys.exit(f"compile_times.py: no file in {db} matches '{a.match}'")
    print(f"{'translation unit':46} {'CPU s':>7} {'wall s':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        obj = os.path.join(tmp, "unit.o")
        for rel in sorted(chosen):
            runs = [compile_once(chosen[rel], obj) for _ in range(max(1, a.rounds))]
            cpu = min(r[0] for r in runs)
            wall = min(r[1] for r in runs)
            print(f"{rel:46} {cpu:7.1f} {wall:7.1f}", flush=True)


if __name__ == "__main__":
    main()
