"""A/B timing of two or more builds of the compiled core on the bench traces.

Each build (a ``_core*.so`` file) is timed in its own Python process, which
loads that file as ``ncap._core`` *before* anything imports ncap; builds and
repeats alternate, so that load from other jobs falls on all of them alike.
(A candidate loaded after ``import ncap`` had imported its own ``_core`` was
seen to time that module instead: load the candidate first.)

Run:  python bench/ab_core.py build/a/_core*.so build/b/_core*.so [--isa avx2]
          [--rows "ref,ref dense,B=256"] [--repeats 2] [--calls 300]

Prints, per build and repeat, min/median milliseconds of ``_core.beff`` (one
thread, batch reduction) per trace. Speed is never asserted: this is a tool
for kernel work, its figures go to bench/README.md with the command.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

sys.path.insert(0, str(HERE))
from bench_core import CONFIGS  # noqa: E402  (the traces of the bench table, by their names there)

# name -> (widths, batch, activation)
ROWS = {c[0]: (c[1], c[2], c[3] if len(c) > 3 else "relu") for c in CONFIGS}

_CHILD = r"""
import importlib.util, json, sys, time
so, isa, rows, calls = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
spec = importlib.util.spec_from_file_location("ncap._core", so)
core = importlib.util.module_from_spec(spec)
spec.loader.exec_module(core)
sys.modules["ncap._core"] = core  # before ncap is imported: ncap uses this build
sys.path.insert(0, sys.argv[5])
import numpy as np
from bench_core import probe_trace
if isa:
    core._force_isa(isa)
out = {"isa": core.isa()}
for name, (widths, batch, activation) in rows.items():
    a, d, g = probe_trace(tuple(widths), batch, activation=activation)
    n = calls if batch <= 64 else max(20, calls // 8)
    for _ in range(20):
        core.beff(a, d, g, False, 1)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        core.beff(a, d, g, False, 1)
        times.append(time.perf_counter() - t)
    out[name] = (1e3 * float(np.min(times)), 1e3 * float(np.median(times)))
print(json.dumps(out))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("builds", nargs="+", type=Path, help="_core*.so files to compare")
    parser.add_argument("--isa", default="", help="force an instruction set: generic, avx2, avx512")
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated trace names")
    parser.add_argument("--repeats", type=int, default=2, help="rounds over all builds")
    parser.add_argument("--calls", type=int, default=300, help="timed calls per trace (B <= 64)")
    args = parser.parse_args()
    names = args.rows.split(",")
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        parser.error(f"--rows: unknown trace(s) {unknown}; known: {', '.join(ROWS)}")
    missing = [str(b) for b in args.builds if not b.is_file()]
    if missing:
        parser.error(f"builds: no such file(s) {missing}")
    rows = json.dumps({n: ROWS[n] for n in names})
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")  # NumPy's team would spin on the other core
    print("build | isa | " + " | ".join(f"{n} min/median (ms)" for n in names))
    for _ in range(args.repeats):
        for build in args.builds:
            cmd = [sys.executable, "-c", _CHILD, str(build), args.isa, rows, str(args.calls)]
            done = subprocess.run(
                [*cmd, str(HERE)], env=env, capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                sys.exit(f"{build}: failed\n{done.stderr}")
            res = json.loads(done.stdout.strip().splitlines()[-1])
            cells = " | ".join(f"{res[n][0]:.3f}/{res[n][1]:.3f}" for n in names)
            print(f"{build} | {res['isa']} | {cells}")


if __name__ == "__main__":
    main()
