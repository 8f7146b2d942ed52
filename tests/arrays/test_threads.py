"""Thread safety, determinism and GIL release of the compiled core (issue 5, point 3).

* Many Python threads calling ncap.beff / ncap.degrees at once on different
  inputs get exactly (bit for bit) what serial calls give.
* Results are bit-identical for threads = 1, 2, 7 (more than the cores) and 0
  (all), and from one call to the next.
* A process forked after a threaded call computes in the child instead of
  hanging (fork copies no helper threads; the child runs on one thread).
* The GIL is released while the kernel runs: another Python thread keeps
  counting during a long ncap.beff call, far more than it can during a C call
  that holds the GIL (the control).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import ncap


def _trace(seed: int, batch: int, widths: list[int], dtype=np.float64):
    rng = np.random.default_rng(seed)
    acts = [rng.normal(size=(batch, n)).astype(dtype) for n in widths[:-1]]
    # ReLU-like masks with some zeros exercise the kernel's sparsity skip.
    derivs = [(rng.random((batch, n)) < 0.6).astype(dtype) for n in widths[1:-1]]
    grads = [rng.normal(size=(batch, n)).astype(dtype) for n in widths[1:]]
    return acts, derivs, grads


# Small (one thread), Gram path (B^2 (n + n_prev) work) and unit path (2 B n n_prev
# work), both above the size where the kernel starts a thread team; float32 too.
CONFIGS = [
    (3, [5, 4, 3, 6, 2], np.float64),
    (17, [9, 30, 11, 7, 10], np.float32),
    (160, [64, 128, 96, 80, 10], np.float64),  # Gram path, parallel
    (1500, [40, 24, 20, 16, 10], np.float64),  # unit path, parallel
    (300, [50, 100, 60, 40, 30, 10], np.float32),
]


def _bits(result: ncap.BetaResult) -> tuple:
    """Everything numeric in a result, as bytes (NaN-safe, -0.0 distinct)."""
    parts = [
        np.asarray(getattr(result, k), dtype=np.float64).tobytes()
        for k in ("value", "numerator", "denominator", "scale")
    ]
    parts.append(np.asarray(result.degenerate).tobytes())
    for t in result.per_layer:
        parts.append(np.asarray(t.numerator, dtype=np.float64).tobytes())
        parts.append(np.asarray(t.denominator, dtype=np.float64).tobytes())
    return tuple(parts)


def _degree_bits(pairs) -> tuple:
    return tuple(x.tobytes() for pair in pairs for x in pair)


@pytest.fixture(scope="module")
def traces():
    return [_trace(seed, b, w, dt) for seed, (b, w, dt) in enumerate(CONFIGS)]


@pytest.mark.parametrize("reduction", ["batch", "sample"])
def test_bit_identical_across_thread_counts_and_runs(traces, reduction):
    for trace in traces:
        reference = _bits(ncap.beff(*trace, reduction=reduction, threads=1))
        for threads in (1, 2, 7, 0, 2, 7):
            got = _bits(ncap.beff(*trace, reduction=reduction, threads=threads))
            assert got == reference, f"threads={threads} differs (B={trace[0][0].shape[0]})"


def test_degrees_bit_identical_across_thread_counts(traces):
    for trace in traces:
        reference = _degree_bits(ncap.degrees(*trace, threads=1))
        for threads in (2, 7, 0, 1):
            assert _degree_bits(ncap.degrees(*trace, threads=threads)) == reference, threads


def test_concurrent_calls_match_serial(traces):
    """8 Python threads x 96 calls on different inputs and thread counts, all at once."""
    jobs = []
    for k in range(96):
        trace_index = k % len(traces)
        kind = ("batch", "sample", "degrees")[k % 3]
        threads = (0, 1, 2, 7)[(k // 3) % 4]
        jobs.append((trace_index, kind, threads))

    def run(job):
        trace_index, kind, threads = job
        trace = traces[trace_index]
        if kind == "degrees":
            return _degree_bits(ncap.degrees(*trace, threads=threads))
        return _bits(ncap.beff(*trace, reduction=kind, threads=threads))

    serial = {}
    for trace_index in range(len(traces)):
        for kind in ("batch", "sample", "degrees"):
            serial[trace_index, kind] = run((trace_index, kind, 1))
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(run, jobs))
    for job, got in zip(jobs, results, strict=False):
        assert got == serial[job[0], job[1]], f"concurrent call {job} differs from serial"


def test_concurrent_errors_do_not_disturb_other_calls(traces):
    """Threads raising ValueError (NaN input) run beside threads computing; both stay right."""
    bad_acts = [a.copy() for a in traces[2][0]]
    bad_acts[1][5, 7] = np.nan
    bad = (bad_acts, traces[2][1], traces[2][2])
    expected = _bits(ncap.beff(*traces[2], threads=1))

    def run(k):
        if k % 2:
            with pytest.raises(ValueError, match="NaN"):
                ncap.beff(*bad)
            return None
        return _bits(ncap.beff(*traces[2]))

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(run, range(64)))
    assert all(r == expected for r in results if r is not None)


# ----------------------------------------------------------------- the GIL


def _progress_during(action) -> tuple[float, float]:
    """Counter increments per second made by a pure-Python thread while ``action`` runs."""
    state = {"run": True, "count": 0, "started": threading.Event()}

    def spin():
        n = 0
        state["started"].set()
        while state["run"]:
            n += 1
        state["count"] = n

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    state["started"].wait()
    t0 = time.perf_counter()
    action()
    elapsed = time.perf_counter() - t0
    state["run"] = False
    thread.join()
    return state["count"] / elapsed, elapsed


def test_gil_released_during_kernel():
    """A Python thread keeps making progress during ~0.3 s of kernel calls.

    Baseline: the counter's rate while the main thread sleeps. Control: the rate
    during a C call that holds the GIL (``sum(range(n))``), which must be near 0;
    the rate during ncap.beff must be a clear fraction of the baseline and well
    above the control. The kernel runs on one thread so that a core is free for
    the counter; three attempts absorb bursts of load from other processes.
    """
    trace = _trace(99, 1024, [256, 512, 512, 512, 10])
    ncap.beff(*trace, threads=1)  # warm-up
    t0 = time.perf_counter()
    ncap.beff(*trace, threads=1)
    one_call = time.perf_counter() - t0
    repeats = max(1, math.ceil(0.3 / one_call))  # ~0.3 s of kernel per measurement

    def kernel():
        for _ in range(repeats):
            ncap.beff(*trace, threads=1)

    t0 = time.perf_counter()
    sum(range(1_000_000))
    per_million = time.perf_counter() - t0
    n_held = max(1, int(repeats * one_call / per_million)) * 1_000_000
    kernel_seconds = repeats * one_call

    attempts = []
    for _ in range(3):
        baseline, _ = _progress_during(lambda: time.sleep(kernel_seconds))
        during_kernel, _ = _progress_during(kernel)
        during_held, _ = _progress_during(lambda: sum(range(n_held)))
        attempts.append((round(during_kernel / baseline, 3), round(during_held / baseline, 3)))
        if during_kernel > 0.25 * baseline and during_kernel > 3 * during_held:
            break
    else:
        pytest.fail(
            "the counter thread made little progress during ncap.beff: "
            f"(kernel/baseline, GIL-held control/baseline) per attempt = {attempts}"
        )
    # The control shows the measurement can tell: a GIL-holding call starves the counter.
    assert min(h for _, h in attempts) < 0.2, attempts


_FORK_AFTER_TEAM = """
import os, signal, sys
import numpy as np
import ncap
from ncap import _core

rng = np.random.default_rng(0)
batch, widths = 512, [64, 128, 96, 80, 10]
acts = [rng.normal(size=(batch, n)) for n in widths[:-1]]
derivs = [(rng.random((batch, n)) < 0.6).astype(float) for n in widths[1:-1]]
grads = [rng.normal(size=(batch, n)) for n in widths[1:]]
want = ncap.beff(acts, derivs, grads, threads=2)  # above the threshold: starts helper threads
assert not _core.in_forked_child()
pid = os.fork()
if pid == 0:
    signal.alarm(60)  # a hang shows as SIGALRM, not as a stuck test
    ok = _core.in_forked_child() and _core.available_threads() == 1
    for threads in (0, 2):
        got = ncap.beff(acts, derivs, grads, threads=threads)
        ok = ok and got.value == want.value
        pairs = ncap.degrees(acts, derivs, grads, threads=threads)
        ok = ok and len(pairs) == 4
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print("CHILD", os.waitstatus_to_exitcode(status))
"""


def test_a_child_forked_after_a_threaded_call_runs_on_one_thread():
    """Fork copies no helper threads (with OpenMP a team in the child waited forever): the
    child computes the same numbers on one thread."""
    src = str(Path(ncap.__file__).absolute().parents[1])
    proc = subprocess.run(
        [sys.executable, "-c", _FORK_AFTER_TEAM],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "2"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "CHILD 0" in proc.stdout, proc.stdout + proc.stderr[-2000:]
