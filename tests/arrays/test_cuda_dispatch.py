"""Run-time dispatch between the CPU and CUDA modules, and the parts of the CUDA path
that need no GPU: the checks made before any device is touched, the no-GPU error,
the workspace plan (its size and numerator strategy) and the test producer's DLPack
capsules. The tests on the CUDA module skip when it was not built."""

import sys

import numpy as np
import pytest

import ncap
from ncap.arrays import cuda as _cuda

needs_module = pytest.mark.skipif(
    not _cuda.cuda_available(), reason="CUDA module not built (no nvcc at build time)"
)


def _trace(rng, widths=(6, 5, 4, 3, 2), batch=4):
    L = len(widths) - 1
    acts = [rng.standard_normal((batch, widths[l])) for l in range(L)]
    derivs = [rng.random((batch, widths[l + 1])) for l in range(L - 1)]
    grads = [rng.standard_normal((batch, widths[l + 1])) for l in range(L)]
    return acts, derivs, grads


def _labelled_cuda(core_cuda, trace, **kwargs):
    """Host memory behind capsules that say CUDA device 0: usable without a GPU."""
    return [[core_cuda.DeviceArray(a, host_memory=True, **kwargs) for a in part] for part in trace]


class FakeCudaTensor:
    """Says it lives on CUDA device 0 but hands out a host capsule."""

    def __init__(self, host):
        self.host = host

    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, stream=None):
        return self.host.__dlpack__()


def test_host_arrays_go_to_the_cpu_module():
    acts, derivs, grads = _trace(np.random.default_rng(0))
    assert ncap.beff(acts, derivs, grads).device == "cpu"


def test_cuda_tensor_without_cuda_module_says_how_to_build(monkeypatch):
    """As on a CPU-only build: the module cannot be imported."""
    monkeypatch.setitem(sys.modules, "ncap._core_cuda", None)
    monkeypatch.delattr(ncap, "_core_cuda", raising=False)
    acts, derivs, grads = _trace(np.random.default_rng(1))
    acts = [FakeCudaTensor(a) for a in acts]
    derivs = [FakeCudaTensor(a) for a in derivs]
    grads = [FakeCudaTensor(a) for a in grads]
    assert not _cuda.cuda_available()
    with pytest.raises(RuntimeError, match="NCAP_CUDA=ON"):
        ncap.beff(acts, derivs, grads)
    _cuda.release_cuda_memory()  # a no-op without the module


def test_mixed_host_and_cuda_arrays_are_refused():
    acts, derivs, grads = _trace(np.random.default_rng(2))
    acts[1] = FakeCudaTensor(acts[1])
    with pytest.raises(ValueError, match="some arrays are on a CUDA device"):
        ncap.beff(acts, derivs, grads)


@needs_module
def test_cuda_module_checks_the_device_of_each_array():
    """The CUDA module reads each producer's device itself: host arrays are refused by name."""
    acts, derivs, grads = _trace(np.random.default_rng(3))
    core_cuda = _cuda.cuda_module()
    with pytest.raises(ValueError, match=r"acts\[0\]: not on a CUDA device"):
        core_cuda.beff(acts, derivs, grads, False, 0)


@needs_module
def test_arrays_on_two_devices_are_refused_before_any_capsule_is_taken():
    """One GPU per call: the second device is named, and no producer handed out a capsule."""
    core_cuda = _cuda.cuda_module()
    device = _labelled_cuda(core_cuda, _trace(np.random.default_rng(4)))
    device[2][1] = core_cuda.DeviceArray(np.ones((4, 5)), host_memory=True, dlpack_device=1)
    with pytest.raises(
        ValueError, match=r"grads\[1\]: on CUDA device 1, but acts\[0\] is on device 0"
    ):
        ncap.beff(*device)
    assert all(a.exports == 0 for part in device for a in part)


@needs_module
def test_without_a_gpu_the_error_says_so():
    """No driver or GPU: a RuntimeError starting "no CUDA device", and no capsule left behind."""
    core_cuda = _cuda.cuda_module()
    if core_cuda.device_count() > 0:
        pytest.skip("a CUDA device is visible")
    device = _labelled_cuda(core_cuda, _trace(np.random.default_rng(5)))
    with pytest.raises(RuntimeError, match=r"^no CUDA device: .*needs a driver for it"):
        ncap.beff(*device)
    with pytest.raises(RuntimeError, match=r"^no CUDA device: "):
        ncap.degrees(*device)
    assert all(a.exports == a.releases for part in device for a in part)
    with pytest.raises(RuntimeError, match=r"^no CUDA device: "):
        core_cuda.DeviceArray(np.ones((2, 2)))


@needs_module
def test_test_producer_releases_an_unconsumed_capsule():
    """DeviceArray's capsules (which the GPU tests count) free their tensor once when dropped."""
    core_cuda = _cuda.cuda_module()
    array = core_cuda.DeviceArray(np.ones((3, 2), np.float32), host_memory=True)
    assert array.__dlpack_device__() == (2, 0)
    capsule = array.__dlpack__(stream=None)
    assert (array.exports, array.releases) == (1, 0)
    del capsule
    assert (array.exports, array.releases) == (1, 1)
    assert array.requested_streams == [None]


@needs_module
@pytest.mark.parametrize("work", ["batch", "sample", "degrees"])
@pytest.mark.parametrize("strategy", ["auto", "gram", "rows"])
def test_cuda_workspace_grows_linearly_with_the_batch(work, strategy):
    """No B x B buffer on the GPU, whichever numerator strategy: doubling B at most doubles
    the memory the up-front estimate asks for."""
    core_cuda = _cuda.cuda_module()
    widths = (2048, 1024, 512, 256, 100)
    small = core_cuda.workspace_bytes(widths, 4096, work, strategy)
    large = core_cuda.workspace_bytes(widths, 8192, work, strategy)
    assert small < large <= 2 * small
    assert core_cuda.workspace_bytes(widths, 46341, work, strategy) < 8 * 46341**2


@needs_module
def test_cuda_strategy_is_the_cheaper_one_by_operation_count():
    """Per layer, the B x B Gram products when B^2 (n_l + n_{l-1}) <= 2 B n_l n_{l-1}, else
    the degree rows: the CPU kernel's rule."""
    core_cuda = _cuda.cuda_module()
    for widths, batch in [
        ((2048, 256, 128, 64, 10), 64),
        ((2048, 256, 128, 64, 10), 1024),
        ((2048, 1024, 512, 256, 100), 4096),
        ((8, 300, 4, 300, 2), 16),
    ]:
        expected = [
            "gram" if batch * batch * (n + m) <= 2 * batch * n * m else "rows"
            for m, n in zip(widths[1:-2], widths[2:-1], strict=True)
        ]
        assert core_cuda.numerator_strategies(widths, batch) == expected
    assert core_cuda.numerator_strategies((2048, 256, 128, 64, 10), 64) == ["gram", "gram"]
    assert core_cuda.numerator_strategies((2048, 1024, 512, 256, 100), 4096) == ["rows", "rows"]


@needs_module
def test_cuda_strategy_and_work_names_are_checked():
    core_cuda = _cuda.cuda_module()
    with pytest.raises(ValueError, match="strategy: expected 'auto', 'gram' or 'rows'"):
        core_cuda.workspace_bytes((4, 3, 3, 3, 2), 8, "batch", "fast")
    with pytest.raises(ValueError, match="work: expected 'batch', 'sample' or 'degrees'"):
        core_cuda.workspace_bytes((4, 3, 3, 3, 2), 8, "both")
