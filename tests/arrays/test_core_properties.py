"""Hypothesis property tests across the C++ boundary (issue 2, point 6).

Random depth, widths, batch, per-array dtype and memory layout, and values
(dense, sparse, all-zero, over many orders of magnitude). Checks: the kernel
equals the NumPy closed form (ncap.arrays.reference) on the same float64 values to
rounding relative to the size of the terms; the degrees equal SPEC section 2's
formulas and satisfy 1.delta_in == 1.delta_out; layouts and thread counts
change no bits.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ncap
from ncap.arrays.reference import beff_numpy

LAYOUTS = ("C", "F", "strided", "negative")
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _layout(x: np.ndarray, how: str) -> np.ndarray:
    if how == "F":
        return np.asfortranarray(x)
    if how == "strided":
        big = np.zeros((2 * x.shape[0] + 1, 3 * x.shape[1] + 2), x.dtype)
        big[1::2, 2::3] = x
        return big[1::2, 2::3]
    if how == "negative":
        return np.ascontiguousarray(x[::-1, ::-1])[::-1, ::-1]
    return np.ascontiguousarray(x)


@st.composite
def arrays_2d(draw, batch: int, width: int) -> np.ndarray:
    seed = draw(st.integers(0, 2**32 - 1))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    how = draw(st.sampled_from(LAYOUTS))
    kind = draw(st.sampled_from(["normal", "relu", "sparse", "zeros", "ones", "small_ints"]))
    scale = 10.0 ** draw(st.integers(-4, 4))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, width))
    if kind == "relu":
        x = np.maximum(x, 0.0)
    elif kind == "sparse":
        x = x * (rng.random(size=x.shape) < 0.2)
    elif kind == "zeros":
        x = np.zeros_like(x)
    elif kind == "ones":
        x = np.ones_like(x)
    elif kind == "small_ints":
        x = rng.integers(-3, 4, size=x.shape).astype(np.float64)
    out = _layout((x * scale).astype(dtype), how)
    assert out.shape == (batch, width)
    return out


@st.composite
def traces(draw, layers=(4, 6), width=(1, 9), batch=(1, 7)):
    n_layers = draw(st.integers(*layers))
    widths = draw(st.lists(st.integers(*width), min_size=n_layers + 1, max_size=n_layers + 1))
    b = draw(st.integers(*batch))
    acts = [draw(arrays_2d(b, n)) for n in widths[:-1]]
    derivs = [draw(arrays_2d(b, n)) for n in widths[1:-1]]
    grads = [draw(arrays_2d(b, n)) for n in widths[1:]]
    return acts, derivs, grads


def _f64(arrays: list) -> list:
    return [np.asarray(a, np.float64) for a in arrays]


def _abs(arrays: list) -> list:
    return [np.abs(np.asarray(a, np.float64)) for a in arrays]


def _assert_close(got, ref, ref_abs, tol=1e-12):
    """Kernel vs NumPy closed form: same maths, different summation order."""
    num_tol = tol * np.asarray(ref_abs["numerator"]) + 1e-300
    den_tol = tol * np.asarray(ref["scale"]) + 1e-300
    np.testing.assert_allclose(got.scale, ref["scale"], rtol=1e-12, atol=1e-300)
    assert np.all(np.abs(np.asarray(got.numerator) - ref["numerator"]) <= num_tol)
    assert np.all(np.abs(np.asarray(got.denominator) - ref["denominator"]) <= den_tol)
    den = np.abs(np.asarray(ref["denominator"]))
    scale = np.asarray(ref["scale"])
    # The degenerate flag can only differ where |den| sits at the threshold itself.
    clear = (den > 2e-10 * scale) | (den < 0.5e-10 * scale)
    got_deg = np.asarray(got.degenerate)
    ref_deg = np.asarray(ref["degenerate"])
    np.testing.assert_array_equal(got_deg[clear], ref_deg[clear])
    value = np.asarray(got.value)
    np.testing.assert_array_equal(value[got_deg], 0.0)
    both = ~got_deg & ~ref_deg
    if np.any(both):
        ref_value = np.asarray(ref["value"])
        value_tol = (num_tol + np.abs(ref_value) * den_tol) / np.where(both, den, 1.0)
        assert np.all((np.abs(value - ref_value) <= 1e-12 * np.abs(ref_value) + value_tol)[both])


@SETTINGS
@given(traces())
def test_kernel_matches_numpy_closed_form(trace):
    acts, derivs, grads = trace
    ref_in = (_f64(acts), _f64(derivs), _f64(grads))
    abs_in = (_abs(acts), _abs(derivs), _abs(grads))
    for reduction in ("batch", "sample"):
        got = ncap.beff(acts, derivs, grads, reduction=reduction)
        ref = beff_numpy(*ref_in, reduction=reduction)
        ref_abs = beff_numpy(*abs_in, reduction=reduction)
        assert got.batch_size == acts[0].shape[0]
        _assert_close(got, ref, ref_abs)
        # per-layer terms add up to the totals
        total_num = sum(np.asarray(t.numerator) for t in got.per_layer)
        total_den = sum(np.asarray(t.denominator) for t in got.per_layer)
        assert np.all(np.abs(total_num - got.numerator) <= 1e-12 * np.asarray(ref_abs["numerator"]))
        assert np.all(np.abs(total_den - got.denominator) <= 1e-12 * np.asarray(ref["scale"]))


def _spec_degrees(acts, derivs, grads):
    """SPEC section 2's degree formulas with einsum, Keras layout (n_{l-1}, n_l)."""
    z = _f64(acts)
    s = [None] + _f64(derivs)
    g = [None] + _f64(grads)
    n_layers, batch = len(z), z[0].shape[0]
    out = []
    for l in range(1, n_layers + 1):
        shape = (z[l - 1].shape[1], g[l].shape[1])
        d_in = (
            np.einsum("bj,bi,b->ji", z[l - 1], s[l], g[l + 1].sum(1)) / batch
            if l <= n_layers - 1
            else np.zeros(shape)
        )
        d_out = (
            np.einsum("bi,bj,b->ji", g[l], s[l - 1], z[l - 2].sum(1)) / batch
            if l >= 2
            else np.zeros(shape)
        )
        out.append((d_in, d_out))
    return out


@SETTINGS
@given(traces(layers=(2, 6)))
def test_degrees_match_spec_and_sum_identity(trace):
    acts, derivs, grads = trace
    got = ncap.degrees(acts, derivs, grads)
    expected = _spec_degrees(acts, derivs, grads)
    abs_expected = _spec_degrees(_abs(acts), _abs(derivs), _abs(grads))
    total_abs = sum(a.sum() for a, _ in abs_expected)  # = sum |P| = the SPEC's scale
    for (d_in, d_out), (e_in, e_out), (a_in, a_out) in zip(
        got, expected, abs_expected, strict=False
    ):
        assert d_in.shape == e_in.shape and d_in.dtype == np.float64
        assert np.all(np.abs(d_in - e_in) <= 1e-12 * a_in + 1e-300)
        assert np.all(np.abs(d_out - e_out) <= 1e-12 * a_out + 1e-300)
    total_in = sum(d_in.sum() for d_in, _ in got)
    total_out = sum(d_out.sum() for _, d_out in got)
    assert abs(total_in - total_out) <= 1e-12 * total_abs + 1e-300


@SETTINGS
@given(traces())
def test_layouts_and_threads_change_no_bits(trace):
    acts, derivs, grads = trace
    contiguous = [[np.ascontiguousarray(x) for x in xs] for xs in trace]
    for reduction in ("batch", "sample"):
        a = ncap.beff(acts, derivs, grads, reduction=reduction, threads=1)
        b = ncap.beff(acts, derivs, grads, reduction=reduction, threads=2)
        c = ncap.beff(*contiguous, reduction=reduction)
        for r in (b, c):
            np.testing.assert_array_equal(r.value, a.value)
            np.testing.assert_array_equal(r.numerator, a.numerator)
            np.testing.assert_array_equal(r.denominator, a.denominator)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traces(layers=(4, 5), width=(100, 400), batch=(128, 256)))
def test_threads_change_no_bits_on_traces_big_enough_to_split(trace):
    # Big enough that the kernel's numerator and degrees use a thread team (its threshold
    # is a few million multiply-adds; here each numerator layer alone is >= 2.5e6).
    acts, derivs, grads = trace
    for reduction in ("batch", "sample"):
        one = ncap.beff(acts, derivs, grads, reduction=reduction, threads=1)
        two = ncap.beff(acts, derivs, grads, reduction=reduction, threads=2)
        np.testing.assert_array_equal(one.value, two.value)
        np.testing.assert_array_equal(one.numerator, two.numerator)
        np.testing.assert_array_equal(one.denominator, two.denominator)
    ref = beff_numpy(_f64(acts), _f64(derivs), _f64(grads))
    ref_abs = beff_numpy(_abs(acts), _abs(derivs), _abs(grads))
    _assert_close(ncap.beff(acts, derivs, grads), ref, ref_abs, tol=1e-11)
    for (p, q), (r, s) in zip(
        ncap.degrees(acts, derivs, grads, threads=1),
        ncap.degrees(acts, derivs, grads, threads=2),
        strict=False,
    ):
        np.testing.assert_array_equal(p, r)
        np.testing.assert_array_equal(q, s)
