"""The CUDA kernel against the CPU kernel, and the CUDA path's handling of devices,
streams, memory and DLPack producers. Needs the CUDA module and a visible GPU
(`pytest -m gpu`); also runs against the host emulation of the CUDA runtime
(`cuda/emulation/run_tests.sh`).

Inputs reach the GPU through ``DeviceArray``, a test producer in the CUDA module
that copies any NumPy view (strided, F-order, negative strides, zero strides,
extra offsets) to the device with the same layout, counts its DLPack capsules
and can write its data late on a stream of its own.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
from support.bruteforce import mlp_trace

import ncap
from ncap.arrays import cuda as _cuda

pytestmark = pytest.mark.gpu

TOL = 1e-11  # relative to the same term computed on |inputs|: both kernels sum in float64


@pytest.fixture(scope="module")
def core_cuda():
    # gpu_check.sh sets NCAP_REQUIRE_GPU=1: on a GPU machine a skip would hide a broken build.
    missing = pytest.fail if os.environ.get("NCAP_REQUIRE_GPU") == "1" else pytest.skip
    if not _cuda.cuda_available():
        missing(
            "the CUDA module was not built (no nvcc at build time; NCAP_CUDA=ON makes it required)"
        )
    module = _cuda.cuda_module()
    if module.device_count() == 0:
        missing("no CUDA device is visible (ncap._core_cuda.device_count() == 0)")
    return module


@pytest.fixture
def two_devices(core_cuda):
    if core_cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    return core_cuda


# ------------------------------------------------------------------ helpers


def random_trace(widths, batch, seed=0, dtype=np.float64):
    """ReLU-like activations, dropout-like derivatives, Gaussian gradients."""
    rng = np.random.default_rng(seed)
    L = len(widths) - 1
    acts = [np.maximum(rng.standard_normal((batch, widths[l])), 0).astype(dtype) for l in range(L)]
    derivs = [
        ((rng.random((batch, widths[l + 1])) > 0.4) * 1.7).astype(dtype) for l in range(L - 1)
    ]
    grads = [rng.standard_normal((batch, widths[l + 1])).astype(dtype) for l in range(L)]
    return acts, derivs, grads


def upload(core, trace, **kwargs):
    return [[core.DeviceArray(a, **kwargs) for a in part] for part in trace]


def absolute(trace):
    return [[np.abs(np.asarray(a, np.float64)) for a in part] for part in trace]


def assert_same_beta(gpu, cpu, bound):
    """GPU vs CPU result to rounding; `bound` is the CPU result on |inputs| (all terms >= 0)."""
    assert gpu.device == "cuda" and cpu.device == "cpu"
    assert gpu.reduction == cpu.reduction and gpu.batch_size == cpu.batch_size

    def close(got, want, limit):
        got, want, limit = (np.atleast_1d(np.asarray(x, np.float64)) for x in (got, want, limit))
        np.testing.assert_array_less(np.abs(got - want), TOL * limit + 1e-300)

    close(gpu.numerator, cpu.numerator, bound.numerator)
    close(gpu.denominator, cpu.denominator, bound.denominator)
    close(gpu.scale, cpu.scale, cpu.scale)
    np.testing.assert_array_equal(gpu.degenerate, cpu.degenerate)
    ok = ~np.atleast_1d(cpu.degenerate)
    value, expected = np.atleast_1d(gpu.value), np.atleast_1d(cpu.value)
    den = np.abs(np.atleast_1d(cpu.denominator))
    # num and den each within TOL * bound: num / den within (err_num + |v| err_den) / |den|
    value_bound = (
        np.atleast_1d(bound.numerator) + np.abs(expected) * np.atleast_1d(bound.denominator)
    ) * 4
    close(value[ok], expected[ok], value_bound[ok] / den[ok])
    assert np.all(value[~ok] == 0)
    assert len(gpu.per_layer) == len(cpu.per_layer)
    for g, c, b in zip(gpu.per_layer, cpu.per_layer, bound.per_layer, strict=True):
        assert (g.layer, g.fan_in, g.fan_out) == (c.layer, c.fan_in, c.fan_out)
        close(g.numerator, c.numerator, b.numerator)
        close(g.denominator, c.denominator, b.denominator)


def check_against_cpu(core, host, device, reductions=("batch", "sample")):
    for reduction in reductions:
        cpu = ncap.beff(*host, reduction=reduction)
        gpu = ncap.beff(*device, reduction=reduction)
        assert_same_beta(gpu, cpu, ncap.beff(*absolute(host), reduction=reduction))


def check_degrees(host, device):
    cpu = ncap.degrees(*host)
    bound = ncap.degrees(*absolute(host))
    gpu = ncap.degrees(*device)
    assert len(gpu) == len(cpu)
    for (gi, go), (ci, co), (bi, bo) in zip(gpu, cpu, bound, strict=True):
        assert gi.shape == ci.shape and go.shape == co.shape
        np.testing.assert_array_less(np.abs(gi - ci), TOL * bi + 1e-300)
        np.testing.assert_array_less(np.abs(go - co), TOL * bo + 1e-300)


def laid_out(x, layout):
    """(a NumPy view holding x's values with the given memory layout, DeviceArray options)."""
    B, n = x.shape
    if layout == "c":
        return np.ascontiguousarray(x), {}
    if layout == "f":
        return np.asfortranarray(x), {}
    if layout == "strided":  # every other row, every third column, inside a larger array
        big = np.full((2 * B + 1, 3 * n + 2), np.nan, x.dtype)
        view = big[1::2, 2::3][:B, :n]
        view[...] = x
        return view, {}
    if layout == "negative":  # both strides negative: element [0, 0] is the last in memory
        big = np.empty_like(x)
        view = big[::-1, ::-1]
        view[...] = x
        return view, {}
    if layout == "byte_offset":
        return np.ascontiguousarray(x), {"pad_bytes": 40}
    if layout == "pointer_offset":
        return np.ascontiguousarray(x), {"pad_bytes": 40, "offset_in_pointer": True}
    raise ValueError(layout)


LAYOUTS = ("c", "f", "strided", "negative", "byte_offset", "pointer_offset")


def upload_laid_out(core, trace, layouts):
    """Host views and device arrays, array k in layouts[k % len(layouts)]."""
    host, device, k = [], [], 0
    for part in trace:
        h_part, d_part = [], []
        for a in part:
            view, options = laid_out(a, layouts[k % len(layouts)])
            h_part.append(view)
            d_part.append(core.DeviceArray(view, **options))
            k += 1
        host.append(h_part)
        device.append(d_part)
    return host, device


# ------------------------------------------------------------------ the numbers


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "widths,batch", [((7, 5, 4, 3, 2), 6), ((40, 33, 17, 16, 10), 37), ((300, 64, 32, 16, 10), 64)]
)
def test_cuda_matches_cpu(core_cuda, widths, batch, dtype):
    """Batch and per-sample beta (value, terms, scale, per layer) and degrees equal the CPU's."""
    host = [
        list(p) for p in mlp_trace(widths, batch, "relu_dropout", seed=batch).astype(dtype).args()
    ]
    device = upload(core_cuda, host)
    check_against_cpu(core_cuda, host, device)
    check_degrees(host, device)


@pytest.mark.parametrize("layout", [*LAYOUTS, "mixed"])
def test_views_are_read_through_their_strides_and_offsets(core_cuda, layout):
    """Strided, F-order, negative-stride and offset views (byte_offset or in the pointer)
    give the CPU's numbers."""
    trace = random_trace((9, 6, 5, 4, 3), 7, seed=3)
    layouts = LAYOUTS if layout == "mixed" else (layout,)
    host, device = upload_laid_out(core_cuda, trace, layouts)
    check_against_cpu(core_cuda, host, device)
    check_degrees(host, device)


def test_zero_stride_rows_read_one_sample(core_cuda):
    """np.broadcast_to views (row stride 0) are read as B copies of one sample."""
    rng = np.random.default_rng(4)
    widths, batch = (6, 5, 4, 3, 2), 9
    trace = [
        [np.broadcast_to(rng.standard_normal(n), (batch, n)) for n in widths[:-1]],
        [np.broadcast_to(rng.random(n), (batch, n)) for n in widths[1:-1]],
        [np.broadcast_to(rng.standard_normal(n), (batch, n)) for n in widths[1:]],
    ]
    check_against_cpu(core_cuda, trace, upload(core_cuda, trace))


@pytest.mark.parametrize("strategy", ["auto", "gram", "rows"])
@pytest.mark.parametrize("widths,batch", [((12, 10, 8, 6, 3), 40), ((30, 40, 35, 20, 5), 9)])
def test_both_numerator_strategies_match_cpu(core_cuda, strategy, widths, batch):
    """The B x B Gram products and the degree-row sums give the CPU's batch numerator per layer."""
    host = random_trace(widths, batch, seed=11)
    device = upload(core_cuda, host)
    raw = core_cuda.beff(*device, False, 0, strategy)
    cpu = ncap.beff(*host)
    bound = ncap.beff(*absolute(host))
    for l, (terms, limit) in enumerate(zip(cpu.per_layer, bound.per_layer, strict=True)):
        assert abs(raw["layer_numerator"][l] - terms.numerator) <= TOL * limit.numerator + 1e-300
    assert abs(raw["numerator"] - cpu.numerator) <= TOL * bound.numerator


def test_degenerate_batch_reports_zero(core_cuda):
    """A probe with a dead hidden layer: degenerate on both kernels, value 0."""
    host = [list(p) for p in mlp_trace((6, 5, 4, 3, 2), 5, "relu", dead_layer=2).args()]
    device = upload(core_cuda, host)
    for reduction in ("batch", "sample"):
        gpu = ncap.beff(*device, reduction=reduction)
        assert np.all(gpu.degenerate) and np.all(np.asarray(gpu.value) == 0)
    check_against_cpu(core_cuda, host, device)


def test_float16_and_mixed_dtypes(core_cuda):
    """float16 is widened exactly on the GPU, as on the host; dtypes may differ per array."""
    trace = mlp_trace((20, 12, 9, 7, 4), 11, "relu_bn", seed=2)
    half = [list(p) for p in trace.astype(np.float16).args()]
    check_against_cpu(core_cuda, half, upload(core_cuda, half))
    check_degrees(half, upload(core_cuda, half))
    mixed = [
        [a.astype(np.float16) for a in trace.acts],
        [a.astype(np.float32) for a in trace.derivs],
        [a.astype(np.float64) for a in trace.grads],
    ]
    check_against_cpu(core_cuda, mixed, upload(core_cuda, mixed))


def test_bfloat16_is_widened_as_on_the_host(core_cuda):
    """bfloat16 (ml_dtypes, as TensorFlow and JAX hand it over) is widened exactly on both paths."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    trace = mlp_trace((20, 12, 9, 7, 4), 11, "relu", seed=3)
    host = [[a.astype(ml_dtypes.bfloat16) for a in part] for part in trace.args()]
    check_against_cpu(core_cuda, host, upload(core_cuda, host))


@pytest.mark.parametrize("widths", [(5, 4, 3), (6, 5, 4, 3)])
def test_degrees_of_shallow_probes(core_cuda, widths):
    """Degrees are defined from L = 2 on; the CUDA path gives the CPU's for L = 2 and 3."""
    host = random_trace(widths, 8, seed=len(widths))
    check_degrees(host, upload(core_cuda, host))


@pytest.mark.parametrize("widths", [(1, 1, 1, 1, 1), (4, 1, 3, 1, 2)])
def test_single_sample_and_unit_widths(core_cuda, widths):
    """B = 1 and layers of width 1."""
    host = random_trace(widths, 1, seed=8)
    device = upload(core_cuda, host)
    check_against_cpu(core_cuda, host, device)
    check_degrees(host, device)


def test_batch_beyond_46341_samples(core_cuda):
    """B = 46341 (B^2 > 2^31): both strategies, per-sample beta and degrees match the CPU."""
    if core_cuda.emulated:
        pytest.skip("the host emulation runs one fiber per CUDA thread: far too slow for B = 46341")
    host = random_trace((3, 2, 2, 2, 2), 46341, seed=9, dtype=np.float32)
    device = upload(core_cuda, host)
    check_against_cpu(core_cuda, host, device)
    check_degrees(host, device)
    cpu = ncap.beff(*host)
    bound = ncap.beff(*absolute(host))
    for strategy in ("gram", "rows"):
        raw = core_cuda.beff(*device, False, 0, strategy)
        assert abs(raw["numerator"] - cpu.numerator) <= TOL * bound.numerator


def test_repeated_calls_give_the_same_bits(core_cuda):
    """Fixed reduction trees: the same inputs give the same bits, after a reallocation too."""
    device = upload(core_cuda, random_trace((64, 48, 32, 16, 10), 50, seed=5, dtype=np.float32))
    first = ncap.beff(*device)
    for _ in range(3):
        assert ncap.beff(*device).numerator == first.numerator
    core_cuda.release_workspaces()
    assert ncap.beff(*device).numerator == first.numerator


# ------------------------------------------------------------------ refusals and errors


def test_non_finite_input_gets_the_cpu_message(core_cuda):
    """NaN names the argument, sample and unit exactly as the CPU kernel does."""
    host = random_trace((7, 5, 4, 3, 2), 6, seed=6)
    host[2][2][3, 1] = np.nan
    with pytest.raises(ValueError) as cpu:
        ncap.beff(*host)
    with pytest.raises(ValueError) as gpu:
        ncap.beff(*upload(core_cuda, host))
    assert str(gpu.value) == str(cpu.value)
    assert "grads[2]" in str(gpu.value) and "sample 3, unit 1" in str(gpu.value)


def test_overflowing_sum_gets_the_cpu_message(core_cuda):
    """Finite values whose |x| sum overflows float64: the CPU's "values too large" message."""
    host = random_trace((7, 5, 4, 3, 2), 6, seed=7)
    host[0][1][2, :] = 1e308
    with pytest.raises(ValueError) as cpu:
        ncap.degrees(*host)
    with pytest.raises(ValueError) as gpu:
        ncap.degrees(*upload(core_cuda, host))
    assert str(gpu.value) == str(cpu.value)
    assert "acts[1]" in str(gpu.value) and "values too large" in str(gpu.value)


def test_failed_allocation_then_normal_call(core_cuda):
    """A cudaMalloc failure is a MemoryError naming the fix; the runtime's error is cleared,
    so the next call succeeds (it once failed with a stale "out of memory")."""
    host = random_trace((7, 5, 4, 3, 2), 6, seed=12)
    device = upload(core_cuda, host)
    core_cuda.release_workspaces()
    core_cuda._fail_next_allocations(1)
    try:
        with pytest.raises(MemoryError) as err:
            ncap.beff(*device)
    finally:
        core_cuda._fail_next_allocations(0)
    message = str(err.value)
    assert "split the batch" in message
    assert "TF_FORCE_GPU_ALLOW_GROWTH" in message and "XLA_PYTHON_CLIENT_PREALLOCATE" in message
    assert core_cuda._last_error() == 0
    check_against_cpu(core_cuda, host, device)
    assert core_cuda._last_error() == 0


def test_workspace_beyond_the_device_is_refused_before_allocating(core_cuda):
    """Work that cannot fit is refused up front, stating the memory needed and the TF/JAX hint."""
    widths = (256, 256, 256, 256, 10)
    batch = 1 << 20
    while core_cuda.workspace_bytes(widths, batch) < 1 << 42:  # 4 TiB: more than any GPU
        batch *= 2
    rng = np.random.default_rng(13)
    trace = [
        [np.broadcast_to(rng.random(n), (batch, n)) for n in widths[:-1]],
        [np.broadcast_to(rng.random(n), (batch, n)) for n in widths[1:-1]],
        [np.broadcast_to(rng.random(n), (batch, n)) for n in widths[1:]],
    ]
    device = upload(core_cuda, trace)
    allocations = core_cuda._call_counts()["device_allocations"]
    with pytest.raises(
        MemoryError, match=r"needs about .* GiB of memory for this batch \(B = \d+\).* is free"
    ) as err:
        ncap.beff(*device)
    assert "TF_FORCE_GPU_ALLOW_GROWTH" in str(err.value)
    assert core_cuda._call_counts()["device_allocations"] == allocations
    assert core_cuda._last_error() == 0
    small = random_trace((7, 5, 4, 3, 2), 6, seed=14)
    check_against_cpu(core_cuda, small, upload(core_cuda, small))


def test_bad_tensors_are_refused_by_name(core_cuda):
    """dtype, alignment and host memory posing as CUDA memory: a clear error naming the argument."""
    host = random_trace((7, 5, 4, 3, 2), 6, seed=15, dtype=np.float32)
    cases = [
        (2, 1, core_cuda.DeviceArray(host[2][1].astype(np.int32)), TypeError, "got int32"),
        (0, 2, core_cuda.DeviceArray(host[0][2], pad_bytes=2), ValueError, "not aligned"),
        (1, 0, core_cuda.DeviceArray(host[1][0], host_memory=True), ValueError, "host memory"),
    ]
    names = ("acts", "derivs", "grads")
    for part, index, bad, error, text in cases:
        device = upload(core_cuda, host)
        device[part][index] = bad
        with pytest.raises(error, match=text) as err:
            ncap.beff(*device)
        assert str(err.value).startswith(f"{names[part]}[{index}]: ")
        assert core_cuda._last_error() == 0


def test_capsules_are_released_exactly_once(core_cuda):
    """Every DLPack capsule ncap takes is handed back once, after success and after failure."""
    host = random_trace((7, 5, 4, 3, 2), 6, seed=16)
    device = upload(core_cuda, host)
    flat = [a for part in device for a in part]
    ncap.beff(*device)
    ncap.beff(*device, reduction="sample")
    ncap.degrees(*device)
    assert all(a.exports == 3 and a.releases == 3 for a in flat)
    device[2][3] = core_cuda.DeviceArray(host[2][3].astype(np.int8))  # refused after the others
    with pytest.raises(TypeError):
        ncap.beff(*device)
    assert all(a.exports == a.releases for part in device for a in part)
    nan = [list(p) for p in host]
    nan[1][0] = nan[1][0].copy()
    nan[1][0][0, 0] = np.inf
    device = upload(core_cuda, nan)
    with pytest.raises(ValueError, match="NaN or Inf"):
        ncap.beff(*device)
    assert all(a.exports == 1 and a.releases == 1 for part in device for a in part)


# ------------------------------------------------------------------ streams, devices, memory


def test_stream_handshake_orders_ncap_after_a_late_write(core_cuda):
    """ncap passes its own stream to __dlpack__, so a producer's pending write lands first."""
    old = random_trace((64, 32, 16, 8, 4), 16, seed=17)
    new = random_trace((64, 32, 16, 8, 4), 16, seed=18)
    device = upload(core_cuda, old)
    syncs = core_cuda._call_counts()["device_synchronizations"]
    for part, values in zip(device, new, strict=True):
        for array, v in zip(part, values, strict=True):
            array.overwrite_later(v, delay_ms=30.0)
    result = ncap.beff(*device)
    assert_same_beta(result, ncap.beff(*new), ncap.beff(*absolute(new)))
    assert core_cuda._call_counts()["device_synchronizations"] == syncs  # no device-wide wait
    for part in device:
        for array in part:
            (stream,) = array.requested_streams
            assert isinstance(stream, int) and stream > 2  # ncap's own stream, not a default one


def test_producer_without_stream_support_is_waited_for(core_cuda):
    """A producer that refuses DLPack's stream argument (as tf.Tensor) gets a device-wide wait."""
    old = random_trace((64, 32, 16, 8, 4), 16, seed=19)
    new = random_trace((64, 32, 16, 8, 4), 16, seed=20)
    device = upload(core_cuda, old, stream_handshake=False)
    for part, values in zip(device, new, strict=True):
        for array, v in zip(part, values, strict=True):
            array.overwrite_later(v, delay_ms=30.0)
    syncs = core_cuda._call_counts()["device_synchronizations"]
    result = ncap.beff(*device)
    assert_same_beta(result, ncap.beff(*new), ncap.beff(*absolute(new)))
    assert core_cuda._call_counts()["device_synchronizations"] == syncs + 1


def test_torch_tensor_written_on_a_side_stream(core_cuda):
    """A PyTorch tensor still being written on a non-default stream, no sync before the call."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA device")
    host = random_trace((256, 128, 64, 32, 10), 64, seed=21, dtype=np.float32)
    sources = [[torch.from_numpy(a).cuda() for a in part] for part in host]
    targets = [[torch.zeros_like(t) for t in part] for part in sources]
    torch.cuda.synchronize()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)  # about 30 ms of GPU time before the copies run
        for src_part, dst_part in zip(sources, targets, strict=True):
            for src, dst in zip(src_part, dst_part, strict=True):
                dst.copy_(src, non_blocking=True)
        result = ncap.beff(*targets)
    assert_same_beta(result, ncap.beff(*host), ncap.beff(*absolute(host)))


def test_workspace_is_cached_and_results_come_back_in_one_copy(core_cuda):
    """After the first call: no allocation, one device-to-host copy, one wait on ncap's stream."""
    host = random_trace((128, 64, 32, 16, 10), 32, seed=22)
    device = upload(core_cuda, host)
    widths = (128, 64, 32, 16, 10)
    for work, call in [
        ("batch", lambda: ncap.beff(*device)),
        ("sample", lambda: ncap.beff(*device, reduction="sample")),
        ("degrees", lambda: ncap.degrees(*device)),
    ]:
        call()
        assert core_cuda.cached_workspace_bytes(0) >= core_cuda.workspace_bytes(widths, 32, work)
        before = core_cuda._call_counts()
        call()
        after = core_cuda._call_counts()
        delta = {k: after[k] - before[k] for k in after}
        assert delta == {
            "device_allocations": 0,
            "device_to_host_copies": 1,
            "device_synchronizations": 0,
            "stream_synchronizations": 1,
        }
    core_cuda.release_workspaces()
    assert core_cuda.cached_workspace_bytes(0) == 0


def test_concurrent_calls_from_threads(core_cuda):
    """Threads sharing a device take turns on its workspace and all get the right numbers."""
    traces = [random_trace((40, 30, 20, 10, 5), 12, seed=30 + k) for k in range(4)]
    expected = [ncap.beff(*t) for t in traces]
    bounds = [ncap.beff(*absolute(t)) for t in traces]
    device = [upload(core_cuda, t) for t in traces]
    failures = []

    def work(k):
        try:
            for _ in range(3):
                assert_same_beta(ncap.beff(*device[k]), expected[k], bounds[k])
        except AssertionError as err:  # reported by the main thread
            failures.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_callers_current_device_is_restored(two_devices):
    """A call on GPU k leaves the caller's current device as it was (frameworks allocate there)."""
    core = two_devices
    host = random_trace((7, 5, 4, 3, 2), 6, seed=23)
    for current, target in [(1, 0), (0, 1)]:
        device = upload(core, host, device=target)
        core._set_current_device(current)
        result = ncap.beff(*device)
        assert core.current_device() == current
        assert_same_beta(result, ncap.beff(*host), ncap.beff(*absolute(host)))
    core._set_current_device(0)


def test_memory_on_another_device_than_dlpack_names_is_refused(two_devices):
    """TensorFlow's device id is its logical GPU index: memory elsewhere is refused by name."""
    host = random_trace((7, 5, 4, 3, 2), 6, seed=24)
    device = upload(two_devices, host, device=0, dlpack_device=1)
    with pytest.raises(
        ValueError, match=r"acts\[0\]: DLPack names CUDA device 1, but its memory is on"
    ):
        ncap.beff(*device)
