"""The compiled core against an independent brute force (explicit P, SPEC sections 2-3)."""

from __future__ import annotations

import numpy as np
import pytest
from support.bruteforce import (
    KINDS,
    Trace,
    brute_beta,
    brute_degrees,
    explicit_P,
    mlp_trace,
    relu_shortcut_sample,
)

import ncap

# (widths n_0..n_L, batch): L = 4 and L = 5, B = 1..6.
CASES = [
    ((3, 4, 3, 2, 2), 1),
    ((3, 4, 3, 2, 2), 4),
    ((5, 3, 4, 2, 3), 6),
    ((4, 3, 3, 2, 3, 2), 2),
    ((2, 3, 2, 3, 2, 3), 5),
    ((3, 2, 4, 3, 2, 2), 3),
]
RTOL = 1e-10


def _check_terms(
    value, numerator, denominator, degenerate, expected: dict, tol: float = 1e-13
) -> None:
    """Kernel vs brute force for one beta: agreement to rounding relative to the size of the terms.

    The two sum in different orders, so a numerator that cancels to ~0 (S^L = 0 under
    softmax cross-entropy) can only agree to rounding of its terms, not relatively.
    """
    num_tol = tol * expected["num_scale"]
    den_tol = tol * expected["scale"]
    assert bool(degenerate) == bool(expected["degenerate"])
    np.testing.assert_allclose(denominator, expected["denominator"], rtol=RTOL, atol=den_tol)
    np.testing.assert_allclose(numerator, expected["numerator"], rtol=RTOL, atol=num_tol)
    if expected["degenerate"]:
        assert value == 0.0
    else:
        den = abs(expected["denominator"])
        value_tol = (num_tol + abs(expected["value"]) * den_tol) / den
        np.testing.assert_allclose(value, expected["value"], rtol=RTOL, atol=value_tol)


def _check_batch(result: ncap.BetaResult, expected: dict) -> None:
    np.testing.assert_allclose(result.scale, expected["scale"], rtol=RTOL)
    _check_terms(result.value, result.numerator, result.denominator, result.degenerate, expected)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("widths,batch", CASES)
def test_batch_beta_matches_explicit_P(kind, widths, batch):
    trace = mlp_trace(widths, batch, kind, seed=batch * 7 + len(widths))
    expected = brute_beta(trace, "batch")
    result = ncap.beff(*trace.args())
    assert result.reduction == "batch" and result.batch_size == batch
    assert isinstance(result.value, float)
    _check_batch(result, expected)
    # per-layer terms add up to the totals, and the layers are labelled as the SPEC counts them
    assert [t.layer for t in result.per_layer] == list(range(1, len(widths)))
    assert [(t.fan_in, t.fan_out) for t in result.per_layer] == list(
        zip(widths[:-1], widths[1:], strict=False)
    )
    np.testing.assert_allclose(
        sum(t.numerator for t in result.per_layer),
        result.numerator,
        rtol=1e-12,
        atol=1e-15 * expected["scale"],
    )
    np.testing.assert_allclose(
        sum(t.denominator for t in result.per_layer),
        result.denominator,
        rtol=1e-12,
        atol=1e-15 * expected["scale"],
    )
    assert result.per_layer[0].numerator == 0.0 and result.per_layer[-1].numerator == 0.0
    assert result.per_layer[-1].denominator == 0.0


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("widths,batch", CASES)
def test_sample_beta_matches_each_P_b(kind, widths, batch):
    trace = mlp_trace(widths, batch, kind, seed=batch * 11 + len(widths))
    expected = brute_beta(trace, "sample")
    result = ncap.beff(*trace.args(), reduction="sample")
    assert result.value.shape == (batch,) and result.value.dtype == np.float64
    np.testing.assert_array_equal(result.degenerate, expected["degenerate"])
    np.testing.assert_allclose(result.scale, expected["scale"], rtol=RTOL)
    for b in range(batch):
        _check_terms(
            result.value[b],
            result.numerator[b],
            result.denominator[b],
            result.degenerate[b],
            {k: v[b] for k, v in expected.items()},
        )
    with pytest.raises(TypeError, match="reduction='batch'"):
        float(result)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("widths,batch", CASES[:4])
def test_degrees_match_explicit_P_in_keras_layout(kind, widths, batch):
    trace = mlp_trace(widths, batch, kind, seed=batch + 3)
    expected = brute_degrees(trace)
    got = ncap.degrees(*trace.args())
    assert len(got) == len(widths) - 1
    scale = explicit_P(trace, absolute=True).sum()
    for l, ((d_in, d_out), (e_in, e_out)) in enumerate(zip(got, expected, strict=False), start=1):
        assert d_in.shape == d_out.shape == (widths[l - 1], widths[l])  # Keras: (n_in, n_out)
        assert d_in.dtype == d_out.dtype == np.float64
        np.testing.assert_allclose(d_in, e_in, rtol=RTOL, atol=1e-14 * scale)
        np.testing.assert_allclose(d_out, e_out, rtol=RTOL, atol=1e-14 * scale)
    assert np.all(got[0][1] == 0.0)  # delta_out(W^1) = 0
    assert np.all(got[-1][0] == 0.0)  # delta_in(W^L) = 0


@pytest.mark.parametrize("kind", KINDS)
def test_degrees_give_beta(kind):
    # beta = (delta_out . delta_in) / (1 . delta_in) over all weights; 1.delta_in == 1.delta_out.
    trace = mlp_trace((5, 6, 5, 4, 3), 6, kind, seed=5)
    pairs = ncap.degrees(*trace.args())
    total_in = sum(d_in.sum() for d_in, _ in pairs)
    total_out = sum(d_out.sum() for _, d_out in pairs)
    scale = explicit_P(trace, absolute=True).sum()
    assert abs(total_in - total_out) <= 1e-13 * scale
    num = sum(float(np.sum(d_in * d_out)) for d_in, d_out in pairs)
    result = ncap.beff(*trace.args())
    assert not result.degenerate
    np.testing.assert_allclose(result.denominator, total_in, rtol=1e-12, atol=1e-14 * scale)
    np.testing.assert_allclose(result.numerator, num, rtol=1e-10, atol=1e-14 * scale)
    np.testing.assert_allclose(result.value, num / total_in, rtol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_float32_inputs_accumulate_in_float64(kind):
    trace32 = mlp_trace((5, 3, 4, 2, 3), 6, kind, seed=9).astype(np.float32)
    exact = trace32.astype(np.float64)  # the float32 values, exactly, in float64
    for reduction in ("batch", "sample"):
        got = ncap.beff(*trace32.args(), reduction=reduction)
        want = ncap.beff(*exact.args(), reduction=reduction)
        np.testing.assert_allclose(got.value, want.value, rtol=1e-12)
    expected = brute_beta(exact, "batch")
    _check_batch(ncap.beff(*trace32.args()), expected)
    expected_sample = brute_beta(exact, "sample")
    got = ncap.beff(*trace32.args(), reduction="sample")
    for b in range(6):
        _check_terms(
            got.value[b],
            got.numerator[b],
            got.denominator[b],
            got.degenerate[b],
            {k: v[b] for k, v in expected_sample.items()},
        )
    for (a, b), (c, d) in zip(ncap.degrees(*trace32.args()), brute_degrees(exact), strict=False):
        np.testing.assert_allclose(a, c, rtol=RTOL, atol=1e-14)
        np.testing.assert_allclose(b, d, rtol=RTOL, atol=1e-14)


def test_mixed_dtypes_per_array():
    trace = mlp_trace((3, 4, 3, 2, 2), 4, "relu", seed=2)
    mixed = Trace(
        [a.astype(np.float32) if i % 2 else a for i, a in enumerate(trace.acts)],
        [d.astype(np.float32) for d in trace.derivs],
        [g if i % 2 else g.astype(np.float32) for i, g in enumerate(trace.grads)],
    )
    expected = brute_beta(mixed, "batch")
    _check_batch(ncap.beff(*mixed.args()), expected)


def test_sum_of_in_degrees_equals_sum_of_out_degrees_in_P():
    # The brute force itself: both totals are the sum of all entries of P.
    trace = mlp_trace((4, 3, 3, 2, 3, 2), 3, "tanh", seed=1)
    expected = brute_beta(trace)
    assert abs(expected["denominator"] - expected["out_sum"]) <= 1e-13 * expected["scale"]


# ------------------------------------------------------------ SPEC section 3 facts


@pytest.mark.parametrize("kind", ["relu", "tanh", "relu_bn", "relu_dropout"])
def test_two_hidden_layers_give_zero_under_softmax_ce(kind):
    # L = 3: the only numerator layer is l = 2, weighted by S^3 = sum(softmax - y) = 0.
    trace = mlp_trace((5, 4, 3, 3), 6, kind, seed=4)
    pairs = ncap.degrees(*trace.args())
    num = sum(float(np.sum(d_in * d_out)) for d_in, d_out in pairs)
    size = sum(float(np.sum(np.abs(a) * np.abs(b))) for a, b in brute_degrees(_abs(trace)))
    assert size > 1e-3
    assert abs(num) <= 1e-14 * size
    # ... and ncap.beff refuses such a probe instead of returning that 0.
    with pytest.raises(ValueError, match="three hidden layers"):
        ncap.beff(*trace.args())
    # With random (non-softmax) gradients the same quantity is not zero: the test can fail.
    rnd = mlp_trace((5, 4, 3, 3), 6, "random", seed=4)
    num_rnd = sum(float(np.sum(a * b)) for a, b in ncap.degrees(*rnd.args()))
    size_rnd = sum(float(np.sum(np.abs(a) * np.abs(b))) for a, b in brute_degrees(_abs(rnd)))
    assert abs(num_rnd) > 1e-6 * size_rnd


def _abs(trace: Trace) -> Trace:
    return Trace(*[[np.abs(x) for x in xs] for xs in trace.args()])


def test_all_zero_gradients_are_degenerate():
    trace = mlp_trace((3, 4, 3, 2, 2), 4, "relu", seed=0)
    trace.grads = [np.zeros_like(g) for g in trace.grads]
    for reduction in ("batch", "sample"):
        r = ncap.beff(*trace.args(), reduction=reduction)
        assert np.all(r.degenerate)
        assert np.all(np.asarray(r.value) == 0.0)
        assert np.all(np.asarray(r.denominator) == 0.0)
    assert brute_beta(trace)["degenerate"]


@pytest.mark.parametrize("kind", ["relu", "relu_bn"])
def test_dead_layer_is_degenerate(kind):
    # Layer 2 of 5 dead: every denominator term has a factor that is zero or S^L ~ 0,
    # but the scale is not zero (layers 3-4 are alive), so this tests the relative rule.
    trace = mlp_trace((4, 3, 3, 3, 3, 3), 5, kind, seed=3, dead_layer=2)
    assert np.all(trace.derivs[1] == 0)
    expected = brute_beta(trace)
    assert expected["degenerate"] and expected["scale"] > 0
    r = ncap.beff(*trace.args())
    assert r.degenerate is True and r.value == 0.0 and r.scale > 0
    assert abs(r.denominator) <= 1e-10 * r.scale
    assert np.all(ncap.beff(*trace.args(), reduction="sample").degenerate)


def _tiny_denominator_trace(eps: float) -> Trace:
    """Hidden-layer gradients with exactly zero row sums (integers), g^L of size eps.

    Only the layer-(L-1) denominator term survives, and it is ~eps times the scale.
    """
    rng = np.random.default_rng(8)
    widths, batch = (3, 4, 4, 4, 3), 5
    acts = [rng.uniform(0.5, 1.5, size=(batch, n)) for n in widths[:-1]]
    derivs = [rng.uniform(0.5, 1.5, size=(batch, n)) for n in widths[1:-1]]
    zero_sum = np.array([1.0, -1.0, 2.0, -2.0])
    grads = [np.stack([rng.permutation(zero_sum) for _ in range(batch)]) for _ in widths[1:-1]]
    grads.append(eps * rng.uniform(0.5, 1.5, size=(batch, widths[-1])))
    return Trace(acts, derivs, grads)


def test_tiny_denominator_is_not_flagged_and_no_epsilon_is_added():
    trace = _tiny_denominator_trace(1e-8)
    expected = brute_beta(trace)
    r = ncap.beff(*trace.args())
    ratio = abs(r.denominator) / r.scale
    assert 1e-10 < ratio < 1e-6  # tiny, but above the SPEC's threshold
    assert r.degenerate is False
    assert r.value == r.numerator / r.denominator  # exactly: no epsilon anywhere
    _check_batch(r, expected)
    # The brute force rounds the exactly-cancelling O(1) terms of P before summing them;
    # the NumPy closed form, like the kernel, sums S^l first, so it agrees tightly.
    from ncap.arrays.reference import beff_numpy

    np.testing.assert_allclose(r.value, beff_numpy(*trace.args())["value"], rtol=1e-9)
    s = ncap.beff(*trace.args(), reduction="sample")
    assert not np.any(s.degenerate)
    np.testing.assert_array_equal(s.value, s.numerator / s.denominator)


def test_denominator_below_threshold_is_flagged():
    trace = _tiny_denominator_trace(1e-13)
    r = ncap.beff(*trace.args())
    assert abs(r.denominator) <= 1e-10 * r.scale and r.denominator != 0.0
    assert r.degenerate is True and r.value == 0.0
    assert r.numerator != 0.0  # the terms are still reported
    assert brute_beta(trace)["degenerate"]


def test_most_reference_cases_are_not_degenerate():
    # Keeps the comparisons above meaningful: a degenerate case only compares zeros.
    flags = [
        ncap.beff(*mlp_trace(w, b, k, seed=b * 7 + len(w)).args()).degenerate
        for k in KINDS
        for w, b in CASES
    ]
    assert sum(flags) <= len(flags) // 10


def test_batch_beta_is_not_the_mean_of_sample_betas():
    trace = mlp_trace((5, 6, 5, 4, 3), 6, "relu", seed=12)
    batch = ncap.beff(*trace.args())
    sample = ncap.beff(*trace.args(), reduction="sample")
    assert abs(batch.value - float(np.mean(sample.value))) > 1e-3 * abs(batch.value)
    # a batch of one sample is that sample
    one = Trace(*[[x[:1] for x in xs] for xs in trace.args()])
    np.testing.assert_allclose(
        ncap.beff(*one.args()).value,
        ncap.beff(*one.args(), reduction="sample").value[0],
        rtol=1e-12,
    )


def test_dropout_in_s_needs_the_general_form():
    # With dropout masks folded into s (0 and 1/(1-rate)) the ReLU shortcut (Eq. 10) is wrong.
    trace = mlp_trace((6, 6, 5, 5, 3), 6, "relu_dropout", seed=21)
    result = ncap.beff(*trace.args(), reduction="sample")
    alive = ~result.degenerate
    assert alive.sum() >= 4
    got = result.value[alive]
    np.testing.assert_allclose(got, brute_beta(trace, "sample")["value"][alive], rtol=RTOL)
    shortcut = relu_shortcut_sample(trace)[alive]
    # s = z/relu(a) = 1/(1-rate) where kept: the shortcut is off by that factor in the numerator
    assert np.all(np.abs(got - shortcut) > 0.3 * np.abs(got))
    # For plain ReLU the shortcut and the general form agree (the shortcut above is stated right).
    relu = mlp_trace((6, 6, 5, 5, 3), 6, "relu", seed=21)
    np.testing.assert_allclose(
        ncap.beff(*relu.args(), reduction="sample").value, relu_shortcut_sample(relu), rtol=1e-9
    )


# ------------------------------------------------------------ determinism and input kinds


def _big_trace(dtype=np.float32) -> Trace:
    # Large enough that the kernel's numerator and degrees pass its threshold for a thread team.
    return mlp_trace((600, 300, 200, 100, 10), 256, "relu_dropout", seed=1).astype(dtype)


def _wide_batch_trace(dtype=np.float32) -> Trace:
    # B x (sum of widths) > 4e6: the loading pass (all the per-sample reduction does) splits too.
    return mlp_trace((2100, 40, 30, 20, 10), 2048, "relu_bn", seed=2).astype(dtype)


def _assert_same_bits(runs: list) -> None:
    for r in runs[1:]:
        np.testing.assert_array_equal(r.value, runs[0].value)
        np.testing.assert_array_equal(r.numerator, runs[0].numerator)
        np.testing.assert_array_equal(r.denominator, runs[0].denominator)
        np.testing.assert_array_equal(r.scale, runs[0].scale)
        for a, b in zip(r.per_layer, runs[0].per_layer, strict=False):
            np.testing.assert_array_equal(a.numerator, b.numerator)
            np.testing.assert_array_equal(a.denominator, b.denominator)


@pytest.mark.parametrize("make", [_big_trace, _wide_batch_trace])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bitwise_identical_across_threads_and_calls(make, dtype):
    trace = make(dtype)
    for reduction in ("batch", "sample"):
        _assert_same_bits(
            [ncap.beff(*trace.args(), reduction=reduction, threads=t) for t in (1, 2, 0, 2, 1)]
        )


def test_degrees_bitwise_identical_across_threads_and_calls():
    trace = _big_trace()
    runs = [ncap.degrees(*trace.args(), threads=t) for t in (1, 2, 2, 0)]
    for other in runs[1:]:
        for (a, b), (c, d) in zip(runs[0], other, strict=False):
            np.testing.assert_array_equal(a, c)
            np.testing.assert_array_equal(b, d)


def test_big_trace_matches_numpy_closed_form():
    from ncap.arrays.reference import beff_numpy

    trace = _big_trace()
    ref = beff_numpy(*trace.args(), reduction="batch")
    r = ncap.beff(*trace.args())
    np.testing.assert_allclose(
        r.denominator, ref["denominator"], rtol=1e-10, atol=1e-13 * ref["scale"]
    )
    np.testing.assert_allclose(r.numerator, ref["numerator"], rtol=1e-9)
    np.testing.assert_allclose(r.value, ref["value"], rtol=1e-9)


def _relayout(x: np.ndarray, how: str) -> np.ndarray:
    if how == "fortran":
        y = np.asfortranarray(x)
        assert not y.flags.c_contiguous or x.shape[1] == 1
        return y
    if how == "strided":  # every other row and column of a bigger array
        big = np.zeros((2 * x.shape[0], 3 * x.shape[1]), x.dtype)
        big[::2, ::3] = x
        return big[::2, ::3]
    if how == "negative":  # reversed rows and columns, viewing reversed storage
        rev = np.ascontiguousarray(x[::-1, ::-1])
        y = rev[::-1, ::-1]
        assert y.strides[0] < 0 and y.strides[1] < 0
        return y
    if how == "mixed":  # Fortran storage, rows reversed, a column offset
        big = np.zeros((x.shape[0], x.shape[1] + 2), x.dtype, order="F")
        big[::-1, 2:] = x
        y = big[::-1, 2:]
        assert y.strides[0] < 0 < y.strides[1]
        return y
    raise ValueError(how)


@pytest.mark.parametrize("how", ["fortran", "strided", "negative", "mixed"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layouts_give_identical_results(how, dtype):
    trace = mlp_trace((37, 19, 11, 6, 4), 13, "relu_bn", seed=17).astype(dtype)
    views = Trace(*[[_relayout(x, how) for x in xs] for xs in trace.args()])
    for v, x in zip(views.acts, trace.acts, strict=False):
        np.testing.assert_array_equal(v, x)
    for reduction in ("batch", "sample"):
        a = ncap.beff(*trace.args(), reduction=reduction)
        b = ncap.beff(*views.args(), reduction=reduction)
        np.testing.assert_array_equal(a.value, b.value)
        np.testing.assert_array_equal(a.numerator, b.numerator)
        np.testing.assert_array_equal(a.denominator, b.denominator)
    for (p, q), (r, s) in zip(
        ncap.degrees(*trace.args()), ncap.degrees(*views.args()), strict=False
    ):
        np.testing.assert_array_equal(p, r)
        np.testing.assert_array_equal(q, s)


def test_tuples_and_float16_are_accepted():
    trace = mlp_trace((3, 4, 3, 2, 2), 4, "relu", seed=6)
    as_tuples = ncap.beff(tuple(trace.acts), tuple(trace.derivs), tuple(trace.grads))
    assert as_tuples.value == ncap.beff(*trace.args()).value
    half = trace.astype(np.float16)
    widened = half.astype(np.float32)
    assert ncap.beff(*half.args()).value == ncap.beff(*widened.args()).value


def test_tensorflow_eager_tensors_match_numpy():
    import tensorflow as tf  # a dependency of ncap; imported here so the other tests stay light

    trace = mlp_trace((5, 3, 4, 2, 3), 6, "relu_dropout", seed=30)
    for dtype, tf_dtype in ((np.float32, tf.float32), (np.float64, tf.float64)):
        np_trace = trace.astype(dtype)
        tensors = [[tf.constant(x, dtype=tf_dtype) for x in xs] for xs in np_trace.args()]
        for reduction in ("batch", "sample"):
            a = ncap.beff(*np_trace.args(), reduction=reduction)
            b = ncap.beff(*tensors, reduction=reduction)
            np.testing.assert_array_equal(a.value, b.value)
            np.testing.assert_array_equal(a.denominator, b.denominator)
        for (p, q), (r, s) in zip(
            ncap.degrees(*np_trace.args()), ncap.degrees(*tensors), strict=False
        ):
            np.testing.assert_array_equal(p, r)
            np.testing.assert_array_equal(q, s)
    # a transposed (non-contiguous in TF's sense) tensor goes through correctly too
    t = [[tf.transpose(tf.constant(np.ascontiguousarray(x.T))) for x in xs] for xs in trace.args()]
    assert ncap.beff(*t).value == ncap.beff(*trace.args()).value
