"""Inputs far from 1: beta stays right where float64 products would underflow.

The numerator of SPEC section 3 multiplies six per-sample factors, two of
them from the activations, so activations of 1e-160 make float64 products of
~1e-320 (subnormal: digits lost) and 1e-170 makes them 0. The core scales such
arrays by powers of two and gives the exponents back at the end; these tests
compare with an exact evaluation in rational arithmetic (``fractions``) of the
same float inputs.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from support.bruteforce import mlp_trace

import ncap

TINY_NORMAL = np.finfo(np.float64).tiny


def _exact_terms(acts, derivs, grads, reduction: str) -> dict:
    """SPEC section 3 on the float inputs, exactly: numerator, denominator (lists per sample
    for "sample"), and the per-layer terms. Only for tiny traces (O(B^2 n) Fractions)."""
    z = [[[Fraction(float(v)) for v in row] for row in a] for a in acts]
    s = [None] + [[[Fraction(float(v)) for v in row] for row in a] for a in derivs]
    g = [None] + [[[Fraction(float(v)) for v in row] for row in a] for a in grads]
    n_layers, batch = len(acts), len(z[0])
    Z = [[sum(r) for r in a] for a in z]
    S = [None] + [[sum(r) for r in a] for a in g[1:]]
    N = [None] + [[sum(r) for r in a] for a in s[1:]]

    def dot(x, y):
        return sum(p * q for p, q in zip(x, y, strict=True))

    if reduction == "sample":
        den = [
            sum(Z[l - 1][b] * N[l][b] * S[l + 1][b] for l in range(1, n_layers))
            for b in range(batch)
        ]
        num = [
            sum(
                Z[l - 2][b] * dot(z[l - 1][b], s[l - 1][b]) * dot(s[l][b], g[l][b]) * S[l + 1][b]
                for l in range(2, n_layers)
            )
            for b in range(batch)
        ]
        return {"numerator": num, "denominator": den}
    den = sum(Z[l - 1][b] * N[l][b] * S[l + 1][b] for l in range(1, n_layers) for b in range(batch))
    num = sum(
        S[l + 1][b] * Z[l - 2][c] * dot(s[l][b], g[l][c]) * dot(z[l - 1][b], s[l - 1][c])
        for l in range(2, n_layers)
        for b in range(batch)
        for c in range(batch)
    )
    return {"numerator": num / batch**2, "denominator": den / batch}


def _scaled(trace, acts: float = 1.0, derivs: float = 1.0, grads: float = 1.0):
    return (
        [a * acts for a in trace.acts],
        [d * derivs for d in trace.derivs],
        [x * grads for x in trace.grads],
    )


def _assert_float64_rounding(got: float, exact: Fraction, ulps: float = 64) -> None:
    """got is exact to within `ulps` of float64's spacing at the exact value (subnormals too)."""
    spacing = max(abs(np.spacing(float(exact))), np.finfo(np.float64).smallest_subnormal)
    assert abs(Fraction(got) - exact) <= ulps * Fraction(spacing), (got, float(exact))


@pytest.fixture(scope="module")
def trace():
    return mlp_trace((3, 4, 3, 2, 2), 3, "relu", seed=1)


@pytest.mark.parametrize(
    "factors",
    [
        dict(acts=1e-160),  # products of ~1e-320: subnormal in float64
        dict(acts=1e-170),  # products of ~1e-340: 0 in float64
        dict(acts=1e-300),
        dict(acts=1e-120, derivs=1e-100, grads=1e-60),
        dict(derivs=1e-200),
        dict(grads=1e-250),
    ],
    ids=str,
)
@pytest.mark.parametrize("reduction", ["batch", "sample"])
def test_tiny_inputs_give_the_exact_beta(trace, factors, reduction):
    args = _scaled(trace, **factors)
    exact = _exact_terms(*args, reduction)
    result = ncap.beff(*args, reduction=reduction)
    nums, dens = exact["numerator"], exact["denominator"]
    if reduction == "batch":
        nums, dens = [nums], [dens]
    values = np.atleast_1d(result.value)
    got_num, got_den = np.atleast_1d(result.numerator), np.atleast_1d(result.denominator)
    assert not np.any(result.degenerate)
    for b, (num, den) in enumerate(zip(nums, dens, strict=True)):
        want = num / den
        assert values[b] != 0.0
        _assert_float64_rounding(values[b], want, ulps=8)
        # numerator and denominator are reported as their nearest float64 (maybe subnormal or 0)
        _assert_float64_rounding(got_num[b], num)
        _assert_float64_rounding(got_den[b], den)


def test_value_is_the_ratio_of_the_reported_terms_where_they_are_normal(trace):
    """Scaling inside is exact: with normal floats the result is the plain float64 one."""
    for factor in (1.0, 1e-60, 2.0**-200):
        result = ncap.beff(*_scaled(trace, acts=factor))
        assert abs(result.numerator) > TINY_NORMAL
        assert result.value == result.numerator / result.denominator
    plain = ncap.beff(*trace.args())
    scaled = ncap.beff(*_scaled(trace, acts=2.0**-600))  # exact: a power of two
    assert scaled.value == plain.value * 2.0**-600
    assert scaled.denominator == plain.denominator * 2.0**-600


def test_tiny_inputs_are_not_degenerate_and_zero_inputs_are():
    trace = mlp_trace((3, 4, 3, 2, 2), 4, "relu_bn", seed=3)
    assert not ncap.beff(*_scaled(trace, grads=1e-300)).degenerate
    zero = ncap.beff(*_scaled(trace, grads=0.0))
    assert zero.degenerate and zero.value == 0.0


def test_degrees_of_tiny_inputs_round_to_nearest(trace):
    """delta_in/out multiply three factors: 1e-106 each gives subnormal degrees, rounded once."""
    args = _scaled(trace, acts=1e-106, derivs=1e-106, grads=1e-106)
    exact = np.vectorize(lambda v: Fraction(float(v)), otypes=[object])
    z = [exact(a) for a in args[0]]
    s = [None] + [exact(a) for a in args[1]]
    g = [None] + [exact(a) for a in args[2]]
    batch = z[0].shape[0]
    pairs = ncap.degrees(*args)
    n_layers = len(args[0])
    nonzero = 0
    for l in range(1, n_layers):
        S = g[l + 1].sum(axis=1)
        want = np.einsum("bj,bi,b->ji", z[l - 1], s[l], S) / batch
        for got, value in zip(pairs[l - 1][0].ravel(), want.ravel(), strict=True):
            _assert_float64_rounding(got, value, ulps=2)
            nonzero += got != 0.0
    assert nonzero > 0  # some degrees are subnormal, not flushed to 0
