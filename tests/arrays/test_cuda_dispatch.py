"""Run-time dispatch between the CPU and CUDA modules (runs without a GPU)."""

import sys

import numpy as np
import pytest

import ncap
from ncap.arrays import cuda as _cuda


def _trace(rng, widths=(6, 5, 4, 3, 2), batch=4):
    L = len(widths) - 1
    acts = [rng.standard_normal((batch, widths[l])) for l in range(L)]
    derivs = [rng.random((batch, widths[l + 1])) for l in range(L - 1)]
    grads = [rng.standard_normal((batch, widths[l + 1])) for l in range(L)]
    return acts, derivs, grads


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
    # As on a CPU-only build: the module cannot be imported.
    monkeypatch.setitem(sys.modules, "ncap._core_cuda", None)
    monkeypatch.delattr(ncap, "_core_cuda", raising=False)
    acts, derivs, grads = _trace(np.random.default_rng(1))
    acts = [FakeCudaTensor(a) for a in acts]
    derivs = [FakeCudaTensor(a) for a in derivs]
    grads = [FakeCudaTensor(a) for a in grads]
    assert not _cuda.cuda_available()
    with pytest.raises(RuntimeError, match="NCAP_CUDA=ON"):
        ncap.beff(acts, derivs, grads)


def test_mixed_host_and_cuda_arrays_are_refused():
    acts, derivs, grads = _trace(np.random.default_rng(2))
    acts[1] = FakeCudaTensor(acts[1])
    with pytest.raises(ValueError, match="some arrays are on a CUDA device"):
        ncap.beff(acts, derivs, grads)


@pytest.mark.skipif(
    not _cuda.cuda_available(), reason="CUDA module not built (no nvcc at build time)"
)
def test_cuda_module_checks_the_device_of_each_array():
    # The CUDA module reads the DLPack capsule itself: a host capsule is refused by name.
    acts, derivs, grads = _trace(np.random.default_rng(3))
    core_cuda = _cuda.cuda_module()
    with pytest.raises(ValueError, match=r"acts\[0\]: not on a CUDA device"):
        core_cuda.beff(acts, derivs, grads, False, 0)
