"""Memory leak checks (issue 5, point 2): repeated calls do not grow the process.

ncap runs inside long training jobs, once per step or epoch. Each check warms up,
measures the resident set size (RSS, psutil), makes thousands of calls on the
same inputs and measures again. The inputs are sized so that leaking any
per-call buffer (the float64 workspace is ~50 kB per call here) would grow RSS
by hundreds of MB; the bounds leave room only for allocator noise. Reference
counts of the input arrays are checked too: a leaked reference would keep a
user's arrays alive forever.
"""

from __future__ import annotations

import gc
import sys

import numpy as np
import psutil
import pytest

import ncap

MB = 1024 * 1024
PROCESS = psutil.Process()


def _rss() -> int:
    gc.collect()
    return PROCESS.memory_info().rss


def _trace(seed: int = 0, batch: int = 32, widths=(64, 48, 32, 24, 10), dtype=np.float64):
    rng = np.random.default_rng(seed)
    acts = [rng.normal(size=(batch, n)).astype(dtype) for n in widths[:-1]]
    derivs = [(rng.random((batch, n)) < 0.6).astype(dtype) for n in widths[1:-1]]
    grads = [rng.normal(size=(batch, n)).astype(dtype) for n in widths[1:]]
    return acts, derivs, grads


def _growth(call, n_calls: int, warmup: int = 300) -> float:
    for _ in range(warmup):
        call()
    before = _rss()
    for _ in range(n_calls):
        call()
    return (_rss() - before) / MB


def _refcounts(trace) -> list[int]:
    return [sys.getrefcount(a) for part in trace for a in part]


def test_beff_10000_calls_do_not_grow_rss():
    trace = _trace()
    counts = _refcounts(trace)
    first = ncap.beff(*trace)
    growth = _growth(lambda: ncap.beff(*trace), 10_000)
    assert growth < 5, f"RSS grew by {growth:.1f} MB over 10,000 ncap.beff calls"
    assert _refcounts(trace) == counts, "ncap.beff keeps references to its inputs"
    assert float(ncap.beff(*trace)) == float(first)  # still the same answer


def test_sample_reduction_and_strided_float32_do_not_grow_rss():
    acts, derivs, grads = _trace(1, dtype=np.float32)
    # Strided, Fortran and negative-stride views: the no-copy read path.
    acts = [np.asfortranarray(a) for a in acts]
    derivs = [d[::-1] for d in derivs]
    grads = [np.repeat(g, 2, axis=1)[:, ::2] for g in grads]
    trace = (acts, derivs, grads)
    counts = _refcounts(trace)
    growth = _growth(lambda: ncap.beff(*trace, reduction="sample"), 4_000)
    assert growth < 5, f"RSS grew by {growth:.1f} MB over 4,000 sample-reduction calls"
    assert _refcounts(trace) == counts


def test_degrees_do_not_grow_rss():
    trace = _trace(2, widths=(48, 40, 32, 24, 10))
    counts = _refcounts(trace)
    growth = _growth(lambda: ncap.degrees(*trace), 3_000)
    assert growth < 5, f"RSS grew by {growth:.1f} MB over 3,000 ncap.degrees calls"
    assert _refcounts(trace) == counts


def test_error_paths_do_not_grow_rss():
    """Refused inputs (NaN found in the core; bad dtype found in Python) leak nothing."""
    acts, derivs, grads = _trace(3)
    acts[2] = acts[2].copy()
    acts[2][-1, -1] = np.nan  # found by the core after it has allocated its workspace
    bad_dtype = [g.astype(np.int64) for g in grads]
    nan_trace = (acts, derivs, grads)
    counts = _refcounts(nan_trace)

    def call():
        with pytest.raises(ValueError, match="NaN"):
            ncap.beff(*nan_trace)
        with pytest.raises(TypeError):
            ncap.beff(acts, derivs, bad_dtype)
        with pytest.raises(ValueError, match="chain"):
            ncap.degrees(acts, derivs, grads[::-1])

    growth = _growth(call, 3_000)
    assert growth < 5, f"RSS grew by {growth:.1f} MB over 3,000 refused calls"
    assert _refcounts(nan_trace) == counts
