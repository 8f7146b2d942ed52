"""Large inputs (issue 5, point 4): no 32-bit index arithmetic, clear refusals.

Nothing here allocates more than a few hundred MB:

* element offsets beyond 2^31 (and byte offsets beyond 2^34) are real: the
  arrays are strided views into a sparse file of 2^35 bytes, of which only a
  few pages are ever written or read;
* B * n beyond 2^31 uses zero-stride views (np.broadcast_to) of one sample, so
  the batch beta must equal that one sample's beta (all rows are the same);
* sizes that cannot fit are refused with MemoryError stating the memory needed,
  both for absurd shapes (faked by zero strides) and, in a subprocess whose
  address space is capped with RLIMIT_AS, for a workspace of a few GiB, so the
  check runs the same on any machine and cannot exhaust its memory.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import ncap
from ncap.arrays.reference import beff_numpy

BIG_STRIDE = 2**31 + 7  # elements: b * stride overflows int32 (and uint32 for b >= 2)
# Where the ncap under test was imported from (src/ in a checkout, site-packages
# when installed): subprocesses must import the same one.
SRC = str(Path(ncap.__file__).absolute().parents[1])


def _shape_trace(batch: int, widths: list[int]):
    return (
        [(batch, n) for n in widths[:-1]],
        [(batch, n) for n in widths[1:-1]],
        [(batch, n) for n in widths[1:]],
    )


def _sparse_views(path: Path, batch: int, widths: list[int], dtype, rows_far: bool, seed: int):
    """Views whose rows (or columns) lie BIG_STRIDE elements apart in a sparse file.

    Returns (views, dense copies). Array k starts at element 16 k; element (b, j)
    sits at 16 k + b * BIG_STRIDE + j (rows_far) or 16 k + b + j * BIG_STRIDE.
    """
    dtype = np.dtype(dtype)
    shapes = _shape_trace(batch, widths)
    n_arrays = sum(len(p) for p in shapes)
    far = max(batch, max(widths))
    n_elements = (far - 1) * BIG_STRIDE + 16 * n_arrays + far + 1
    rng = np.random.default_rng(seed)
    with open(path, "wb") as f:
        f.truncate(n_elements * dtype.itemsize)  # sparse: no disk, no memory
    dense = []
    fd = os.open(path, os.O_RDWR)
    try:
        k = 0
        for part in shapes:
            out = []
            for shape in part:
                values = rng.normal(size=shape).astype(dtype)
                for b in range(shape[0]):
                    for j in range(shape[1]):
                        offset = 16 * k + (b * BIG_STRIDE + j if rows_far else b + j * BIG_STRIDE)
                        os.pwrite(fd, values[b, j].tobytes(), offset * dtype.itemsize)
                out.append(values)
                k += 1
            dense.append(out)
    finally:
        os.close(fd)
    mm = np.memmap(path, dtype=dtype, mode="r", shape=(n_elements,))
    views = []
    k = 0
    item = dtype.itemsize
    for part in shapes:
        out = []
        for shape in part:
            strides = (BIG_STRIDE * item, item) if rows_far else (item, BIG_STRIDE * item)
            base = mm[16 * k :]
            out.append(
                np.lib.stride_tricks.as_strided(base, shape=shape, strides=strides, writeable=False)
            )
            k += 1
        views.append(out)
    return views, dense


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rows_far", [True, False], ids=["row-stride", "column-stride"])
def test_offsets_beyond_int32_are_read_correctly(tmp_path, dtype, rows_far):
    """Element offsets up to ~2^33 (byte offsets ~2^36): same numbers as on dense copies."""
    batch, widths = 4, [3, 4, 2, 3, 2]
    views, dense = _sparse_views(tmp_path / "sparse.bin", batch, widths, dtype, rows_far, seed=1)
    for arrays in (views, [[v[::-1] for v in part] for part in views]):  # also negative strides
        want_arrays = dense if arrays is views else [[d[::-1] for d in part] for part in dense]
        for reduction in ("batch", "sample"):
            got = ncap.beff(*arrays, reduction=reduction)
            want = beff_numpy(*want_arrays, reduction=reduction)
            np.testing.assert_allclose(got.value, want["value"], rtol=1e-12, atol=0)
            np.testing.assert_allclose(got.denominator, want["denominator"], rtol=1e-12)
        got_pairs = ncap.degrees(*arrays)
        want_pairs = ncap.degrees(*[[np.ascontiguousarray(a) for a in p] for p in want_arrays])
        for (gi, go), (wi, wo) in zip(got_pairs, want_pairs, strict=False):
            np.testing.assert_array_equal(gi, wi)  # same kernel, same order: same bits
            np.testing.assert_array_equal(go, wo)


def _one_sample_trace(batch: int, widths: list[int], seed: int):
    """Zero-row-stride views: every one of the ``batch`` rows is the same sample."""
    rng = np.random.default_rng(seed)
    parts = _shape_trace(1, widths)
    ones = [[rng.normal(size=s) for s in part] for part in parts]
    views = [[np.broadcast_to(a, (batch, a.shape[1])) for a in part] for part in ones]
    return views, ones


def test_batch_times_width_beyond_2_31():
    """B * n_0 = 2^31 + 2^21 (2^18 rows of an 8200-wide z^0): batch beta == one sample's beta."""
    batch, widths = 2**18, [2**13 + 8, 3, 4, 2, 5]
    assert batch * widths[0] > 2**31
    views, ones = _one_sample_trace(batch, widths, seed=2)
    got = ncap.beff(*views)
    want = beff_numpy(*ones)
    assert got.batch_size == batch
    np.testing.assert_allclose(got.value, want["value"], rtol=1e-9)
    np.testing.assert_allclose(got.denominator, want["denominator"], rtol=1e-9)
    np.testing.assert_allclose(got.scale, want["scale"], rtol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("reduction", ["batch", "sample"])
def test_batch_times_width_beyond_2_32_both_wide_ends(reduction):
    """B * n = 2^32 for z^0 and for g^L (2^19 rows, 8192 wide), both reductions."""
    batch, widths = 2**19, [2**13, 3, 4, 2, 2**13]
    views, ones = _one_sample_trace(batch, widths, seed=3)
    got = ncap.beff(*views, reduction=reduction)
    want = beff_numpy(*ones)
    value = np.asarray(got.value)
    assert value.shape == (() if reduction == "batch" else (batch,))
    np.testing.assert_allclose(value, want["value"], rtol=1e-9)


# ------------------------------------------------------------------ refusals

_SIZE = re.compile(
    r"(-?[0-9][0-9.]*(?:e[+-]?[0-9]+)?)\s*(B|bytes|KiB|MiB|GiB|TiB|PiB|EiB|KB|MB|GB|TB)\b"
)
_UNIT = {
    "B": 1,
    "bytes": 1,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
    "PiB": 2**50,
    "EiB": 2**60,
    "KB": 1e3,
    "MB": 1e6,
    "GB": 1e9,
    "TB": 1e12,
}


def stated_bytes(message: str) -> float:
    """The memory a MemoryError message says is needed, in bytes (fails if it says none)."""
    found = _SIZE.findall(message)
    assert found, f"the error does not state the memory needed: {message!r}"
    sizes = [float(x) * _UNIT[u] for x, u in found]
    assert all(x > 0 for x in sizes), f"a negative or zero size: {message!r}"
    return max(sizes)


def _fake(batch: int, widths: list[int]):
    """Zero-stride arrays of any shape numpy can describe (no memory behind them)."""
    return [
        [np.broadcast_to(np.float64(0.5), s) for s in part] for part in _shape_trace(batch, widths)
    ]


# (function, batch, widths, bytes the error must at least state). beff only sums z^0
# and g^L; degrees store them too. Any stored array is B * n * 8. beff on n0 = 2^36 is
# not here: it stores nothing wide, so it is legal (2^38 reads, minutes long).
ABSURD = [
    pytest.param("beff", 2**44, [3, 3, 3, 3, 3], 8 * 2**44, id="beff-B=2^44"),
    pytest.param("degrees", 2**44, [3, 3, 3, 3, 3], 8 * 2**44, id="degrees-B=2^44"),
    pytest.param("beff", 2**40, [2**19, 3, 3, 3, 3], 8 * 2**40, id="beff-B=2^40,n0=2^19"),
    pytest.param("degrees", 2**40, [2**19, 3, 3, 3, 3], 8 * 2**59, id="degrees-B=2^40,n0=2^19"),
    pytest.param("beff", 2**40, [3, 2**19, 3, 3, 3], 8 * 2**59, id="beff-B=2^40,n1=2^19"),
    pytest.param("degrees", 2**40, [3, 2**19, 3, 3, 3], 8 * 2**59, id="degrees-B=2^40,n1=2^19"),
    pytest.param("degrees", 4, [2**36, 3, 3, 3, 3], 8 * 2**36 * 3, id="degrees-n0=2^36"),
    # B = 1: the inputs are small, the outputs (2 n_0 n_1 float64) are 16 TiB
    pytest.param("degrees", 1, [2**20, 2**20, 3, 3, 3], 16 * 2**40, id="degrees-outputs-16TiB"),
]


@pytest.mark.parametrize("func, batch, widths, at_least", ABSURD)
def test_absurd_sizes_are_refused_with_the_memory_needed(func, batch, widths, at_least):
    arrays = _fake(batch, widths)
    with pytest.raises(MemoryError) as info:
        getattr(ncap, func)(*arrays)
    need = stated_bytes(str(info.value))
    assert need >= at_least, f"stated {need:.3g} bytes < {at_least:.3g}: {info.value}"


_CAPPED = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    import ncap

    func, reduction, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    batch, widths = 2**18, [4, 64, 64, 64, 4]
    fake = lambda n: np.broadcast_to(np.float64(0.5), (batch, n))
    acts = [fake(n) for n in widths[:-1]]
    derivs = [fake(n) for n in widths[1:-1]]
    grads = [fake(n) for n in widths[1:]]
    one_copy = 7 * batch * 64 * 8  # z^1, z^2, s^1..s^3, g^2, g^3 once in float64: 0.875 GiB
    with open("/proc/self/status") as f:
        vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize"))
    # Room for one float64 copy of the stored arrays but not for a second layout,
    # so that whichever allocation comes last fails.
    limit = vm + int(1.5 * one_copy)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        if func == "beff":
            ncap.beff(acts, derivs, grads, reduction=reduction, threads=threads)
        else:
            ncap.degrees(acts, derivs, grads, threads=threads)
    except MemoryError as err:
        print("MEMORYERROR", err)
        sys.exit(0)
    print("COMPUTED")
    """
)


@pytest.mark.parametrize(
    "func, reduction, threads",
    [("beff", "batch", 1), ("beff", "batch", 2), ("beff", "sample", 2), ("degrees", "-", 2)],
)
def test_workspace_beyond_memory_limit_is_refused_not_a_crash(func, reduction, threads):
    """A ~2 GiB workspace with ~1.3 GiB of address space to spare: MemoryError stating the need.

    Runs in a subprocess under RLIMIT_AS, so that no machine can run out of memory
    (at most ~1.3 GiB is touched) and a crash (std::terminate from an allocation
    inside a thread team) shows as a failed exit status rather than killing pytest.
    """
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]),
        OMP_NUM_THREADS="2",
    )
    proc = subprocess.run(
        [sys.executable, "-c", _CAPPED, func, reduction, str(threads)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"exit status {proc.returncode}:\n{out[-2000:]}"
    if "COMPUTED" in proc.stdout:
        return  # an implementation that needs less memory may fit: also correct
    assert "MEMORYERROR" in proc.stdout, out[-2000:]
    message = proc.stdout.split("MEMORYERROR", 1)[1]
    assert stated_bytes(message) >= 7 * 2**18 * 64 * 8, message


_CAPPED_DEGREES = textwrap.dedent(
    """
    import resource, sys
    import numpy as np
    import ncap

    widths = [12000, 12000, 3, 3, 3]  # B = 1: 16 KB of inputs, 2.1 GiB of degrees
    ones = lambda n: np.broadcast_to(np.float64(0.5), (1, n))
    with open("/proc/self/status") as f:
        vm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmSize"))
    limit = vm + 2**30  # 1 GiB to spare: room for one delta matrix, not for both
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        ncap.degrees([ones(n) for n in widths[:-1]], [ones(n) for n in widths[1:-1]],
                     [ones(n) for n in widths[1:]])
    except MemoryError as err:
        print("MEMORYERROR", err)
        sys.exit(0)
    print("COMPUTED")
    """
)


def test_degree_outputs_count_in_the_memory_check():
    """Under an address-space limit, degrees that cannot fit are refused up front, stating
    the memory needed including the outputs (2 x 12000 x 12000 float64 = 2.1 GiB)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(
        [sys.executable, "-c", _CAPPED_DEGREES],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"exit status {proc.returncode}:\n{out[-2000:]}"
    assert "MEMORYERROR" in proc.stdout, out[-2000:]
    message = proc.stdout.split("MEMORYERROR", 1)[1]
    assert "split the batch" in message, message
    assert stated_bytes(message) >= 2 * 12000 * 12000 * 8, message
