"""CUDA kernel against the CPU kernel. Needs a visible GPU: `pytest -m gpu`."""

import numpy as np
import pytest

import ncap
from ncap.arrays import cuda as _cuda

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def core_cuda():
    if not _cuda.cuda_available():
        pytest.fail("the CUDA module was not built: rebuild with NCAP_CUDA=ON")
    module = _cuda.cuda_module()
    if module.device_count() == 0:
        pytest.fail("no CUDA device is visible")
    return module


def _trace(rng, widths, batch, dtype):
    L = len(widths) - 1
    acts = [np.maximum(rng.standard_normal((batch, widths[l])), 0).astype(dtype) for l in range(L)]
    derivs = [(rng.random((batch, widths[l + 1])) > 0.4).astype(dtype) * 1.7 for l in range(L - 1)]
    grads = [rng.standard_normal((batch, widths[l + 1])).astype(dtype) for l in range(L)]
    return acts, derivs, grads


def _upload(core_cuda, arrays):
    return [core_cuda.DeviceArray(np.ascontiguousarray(a)) for a in arrays]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "widths,batch",
    [((7, 5, 4, 3, 2), 6), ((300, 64, 32, 16, 10), 64), ((2048, 256, 128, 64, 10), 128)],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_cuda_matches_cpu(core_cuda, widths, batch, dtype, seed):
    host = _trace(np.random.default_rng(seed), widths, batch, dtype)
    device = [_upload(core_cuda, part) for part in host]
    for reduction in ("batch", "sample"):
        cpu = ncap.beff(*host, reduction=reduction)
        gpu = ncap.beff(*device, reduction=reduction)
        assert gpu.device == "cuda"
        np.testing.assert_allclose(
            gpu.numerator, cpu.numerator, rtol=1e-9, atol=1e-12 * np.max(cpu.scale)
        )
        np.testing.assert_allclose(
            gpu.denominator, cpu.denominator, rtol=1e-9, atol=1e-12 * np.max(cpu.scale)
        )
        np.testing.assert_array_equal(gpu.degenerate, cpu.degenerate)
    for (gi, go), (ci, co) in zip(ncap.degrees(*device), ncap.degrees(*host), strict=False):
        np.testing.assert_allclose(gi, ci, rtol=1e-9, atol=1e-13 * np.abs(ci).max())
        np.testing.assert_allclose(go, co, rtol=1e-9, atol=1e-13 * (np.abs(co).max() + 1e-300))


def test_cuda_is_deterministic(core_cuda):
    host = _trace(np.random.default_rng(5), (512, 128, 64, 32, 10), 256, np.float32)
    device = [_upload(core_cuda, part) for part in host]
    first = ncap.beff(*device)
    for _ in range(5):
        assert ncap.beff(*device).numerator == first.numerator


def test_cuda_rejects_nan_by_name(core_cuda):
    acts, derivs, grads = _trace(np.random.default_rng(6), (7, 5, 4, 3, 2), 6, np.float64)
    grads[2][3, 1] = np.nan
    device = [_upload(core_cuda, part) for part in (acts, derivs, grads)]
    with pytest.raises(ValueError, match=r"grads\[2\].*NaN"):
        ncap.beff(*device)
