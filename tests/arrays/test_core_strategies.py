"""Every numerator strategy and every instruction set of the compiled core against the references.

The core sums the batch numerator of each layer either over the B x B Gram
products or over rows of the degree matrices (chosen by operation count), and
runs kernels written once per instruction set (generic, AVX2, AVX-512; the
best the CPU has is used). Here each strategy is forced through
``ncap._core.beff(..., strategy=...)`` and each instruction set through
``ncap._core._force_isa``, and each is checked against the brute-force P of
SPEC section 2 (tiny traces) and the NumPy closed form (shapes that cross the
kernels' vector, panel and 64-bit mask boundaries).
"""

from __future__ import annotations

import numpy as np
import pytest
from support.bruteforce import KINDS, brute_beta, brute_degrees, explicit_P, mlp_trace

from ncap import _core
from ncap.arrays.reference import beff_numpy

STRATEGIES = ("gram", "rows", "auto")
ISAS = _core.supported_isas()
RTOL = 1e-10

# Tiny (brute force): B = 1..6. Medium (NumPy): widths and batches around 8, 16, 32, 64
# (vector and panel widths) and 63/64/65/130 (nonzero-mask words).
TINY = [((3, 4, 3, 2, 2), 1), ((5, 3, 4, 2, 3), 6), ((4, 3, 3, 2, 3, 2), 5)]
MEDIUM = [
    ((7, 65, 63, 130, 5), 67),
    ((100, 64, 32, 16, 10), 64),
    ((9, 17, 33, 9, 3), 129),
    ((2, 128, 1, 70, 4), 3),
]


@pytest.fixture(params=ISAS)
def isa(request):
    """Runs the test with one instruction set's kernels, then restores the best one."""
    before = _core._force_isa(request.param)
    yield request.param
    _core._force_isa(before)


def _core_beff(trace, strategy: str, reduction: str = "batch", threads: int = 1) -> dict:
    acts, derivs, grads = trace.args()
    return _core.beff(acts, derivs, grads, reduction == "sample", threads, strategy)


def test_every_supported_isa_is_listed_and_the_best_is_used():
    assert ISAS[0] == "generic" and set(ISAS) <= {"generic", "avx2", "avx512"}
    assert _core.isa() == ISAS[-1]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("widths,batch", TINY)
def test_batch_numerator_matches_explicit_P(isa, strategy, kind, widths, batch):
    trace = mlp_trace(widths, batch, kind, seed=batch + len(widths))
    want = brute_beta(trace, "batch")
    got = _core_beff(trace, strategy)
    assert got["degenerate"] == want["degenerate"]
    np.testing.assert_allclose(got["scale"], want["scale"], rtol=RTOL)
    np.testing.assert_allclose(
        got["denominator"], want["denominator"], rtol=RTOL, atol=1e-13 * want["scale"]
    )
    np.testing.assert_allclose(
        got["numerator"], want["numerator"], rtol=RTOL, atol=1e-13 * want["num_scale"]
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("widths,batch", MEDIUM)
@pytest.mark.parametrize("kind", ["relu_dropout", "tanh"])
def test_strategies_match_numpy_on_kernel_boundaries(isa, widths, batch, dtype, kind):
    """Traces whose sizes cross vector, panel, block and mask-word boundaries: sparse
    (ReLU/dropout) and dense (tanh: rows that share every nonzero, which AVX2 pairs)."""
    trace = mlp_trace(widths, batch, kind, seed=batch).astype(dtype)
    want = beff_numpy(*trace.args())
    results = {s: _core_beff(trace, s) for s in STRATEGIES}
    for strategy, got in results.items():
        np.testing.assert_allclose(
            got["denominator"],
            want["denominator"],
            rtol=RTOL,
            atol=1e-13 * want["scale"],
            err_msg=strategy,
        )
        np.testing.assert_allclose(got["numerator"], want["numerator"], rtol=1e-9, err_msg=strategy)
        np.testing.assert_allclose(got["value"], want["value"], rtol=1e-9, err_msg=strategy)
    # Auto takes, layer by layer, the planned strategy (its numbers exactly).
    picks = _core.numerator_strategies(list(widths), batch)
    assert len(picks) == len(widths) - 3 and set(picks) <= {"gram", "rows"}
    for l, pick in enumerate(picks, start=2):
        assert results["auto"]["layer_numerator"][l - 1] == results[pick]["layer_numerator"][l - 1]


@pytest.mark.parametrize("widths,batch", MEDIUM[:2])
def test_instruction_sets_agree(widths, batch):
    """The three kernel builds differ only by rounding (FMA contraction, lane layout)."""
    trace = mlp_trace(widths, batch, "relu_bn", seed=3)
    before = _core.isa()
    try:
        results = {}
        for name in ISAS:
            _core._force_isa(name)
            results[name] = (_core_beff(trace, "gram"), _core_beff(trace, "rows"))
    finally:
        _core._force_isa(before)
    first = results[ISAS[0]]
    for got in results.values():
        for a, b in zip(got, first, strict=True):
            np.testing.assert_allclose(a["numerator"], b["numerator"], rtol=1e-11)
            np.testing.assert_allclose(a["denominator"], b["denominator"], rtol=1e-12)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_each_strategy_is_bit_identical_across_thread_counts(isa, strategy):
    # B = 160 and these widths put both strategies above the size that starts a team.
    trace = mlp_trace((64, 128, 96, 80, 10), 160, "relu_dropout", seed=9)
    runs = [_core_beff(trace, strategy, threads=t) for t in (1, 2, 3, 0)]
    for run in runs[1:]:
        for key in ("value", "numerator", "denominator", "scale", "layer_numerator"):
            assert run[key] == runs[0][key], (strategy, key)


@pytest.mark.parametrize("kind", ["relu_dropout", "tanh"])
def test_sample_reduction_matches_explicit_P(isa, kind):
    trace = mlp_trace((5, 3, 4, 2, 3), 6, kind, seed=4)
    want = brute_beta(trace, "sample")
    got = _core_beff(trace, "auto", reduction="sample")
    np.testing.assert_array_equal(got["degenerate"], want["degenerate"])
    np.testing.assert_allclose(got["denominator"], want["denominator"], rtol=RTOL, atol=1e-13)
    np.testing.assert_allclose(
        got["numerator"], want["numerator"], rtol=RTOL, atol=1e-13 * np.max(want["num_scale"])
    )


@pytest.mark.parametrize("widths,batch", [((3, 4, 3, 2, 2), 4), ((4, 3, 3, 2, 3, 2), 5)])
def test_degrees_match_explicit_P(isa, widths, batch):
    trace = mlp_trace(widths, batch, "relu_dropout", seed=batch)
    scale = explicit_P(trace, absolute=True).sum()
    for (d_in, d_out), (e_in, e_out) in zip(
        _core.degrees(*trace.args(), 1), brute_degrees(trace), strict=True
    ):
        np.testing.assert_allclose(d_in, e_in, rtol=RTOL, atol=1e-14 * scale)
        np.testing.assert_allclose(d_out, e_out, rtol=RTOL, atol=1e-14 * scale)


def test_degrees_on_kernel_boundaries(isa):
    """Degrees (Keras layout) against an einsum of SPEC section 2, 65- and 130-wide layers."""
    trace = mlp_trace((7, 65, 63, 130, 5), 67, "relu_dropout", seed=2)
    z, s, g = trace.spec()
    n_layers = trace.n_layers
    batch = z[0].shape[0]
    got = _core.degrees(*trace.args(), 1)
    for l in range(1, n_layers + 1):
        d_in, d_out = got[l - 1]
        if l <= n_layers - 1:
            want = np.einsum("bj,bi,b->ji", z[l - 1], s[l], g[l + 1].sum(1)) / batch
            bound = np.einsum("bj,bi,b->ji", abs(z[l - 1]), abs(s[l]), abs(g[l + 1]).sum(1))
            np.testing.assert_allclose(d_in, want, rtol=1e-12, atol=1e-14 * bound.max() / batch)
        else:
            assert not d_in.any()
        if l >= 2:
            want = np.einsum("bj,bi,b->ji", s[l - 1], g[l], z[l - 2].sum(1)) / batch
            bound = np.einsum("bj,bi,b->ji", abs(s[l - 1]), abs(g[l]), abs(z[l - 2]).sum(1))
            np.testing.assert_allclose(d_out, want, rtol=1e-12, atol=1e-14 * bound.max() / batch)
        else:
            assert not d_out.any()


@pytest.mark.parametrize("how", ["strided", "negative"])
def test_layouts_give_identical_bits(isa, how):
    """Strided and reversed views go through the same lanes as contiguous rows."""
    trace = mlp_trace((37, 70, 33, 6, 4), 13, "relu_bn", seed=17).astype(np.float32)

    def relayout(x):
        if how == "strided":
            big = np.zeros((2 * x.shape[0], 3 * x.shape[1]), x.dtype)
            big[::2, ::3] = x
            return big[::2, ::3]
        return np.ascontiguousarray(x[::-1, ::-1])[::-1, ::-1]

    views = [[relayout(x) for x in xs] for xs in trace.args()]
    for strategy in ("gram", "rows"):
        for reduction in ("batch", "sample"):
            a = _core_beff(trace, strategy, reduction)
            b = _core.beff(*views, reduction == "sample", 1, strategy)
            np.testing.assert_array_equal(a["value"], b["value"])
            np.testing.assert_array_equal(a["denominator"], b["denominator"])


def test_the_plan_takes_the_strategy_with_fewer_multiply_adds():
    # reference probe: B = 64 -> Gram products (B^2 (n + n_prev) < 2 B n n_prev); B = 1024 -> rows
    assert _core.numerator_strategies([2048, 256, 128, 64, 10], 64) == ["gram", "gram"]
    assert _core.numerator_strategies([2048, 256, 128, 64, 10], 1024) == ["rows", "rows"]
    # B = 256: layer 2 (B (128 + 256) = 98304 > 2 * 128 * 256 = 65536) and layer 3 go by rows
    assert _core.numerator_strategies([2048, 256, 128, 64, 10], 256) == ["rows", "rows"]
    assert _core.numerator_strategies([8, 512, 512, 8, 4], 300) == ["gram", "rows"]


def test_unknown_strategy_and_isa_are_refused():
    trace = mlp_trace((3, 4, 3, 2, 2), 2, "relu", seed=0)
    with pytest.raises(ValueError, match="^strategy: .*'gram'.*'bogus'"):
        _core_beff(trace, "bogus")
    with pytest.raises(ValueError, match="^isa: .*'sse9'"):
        _core._force_isa("sse9")
