"""ncap.predict_final: the Bayesian ridge line and SPEC section 6's window rule, checked by hand."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from sklearn.linear_model import BayesianRidge

import ncap
from ncap.selection.predict import Prediction, predict_final, window_bic

N_VAL = 179  # the built-in example's validation set


def _curves(seed: int, n_epochs: int, n_val: int = N_VAL) -> tuple[np.ndarray, np.ndarray]:
    """A noisy fine-tuning record: beta decays towards 0 while accuracy rises (counts / n_val)."""
    rng = np.random.default_rng(seed)
    t = np.arange(1, n_epochs + 1)
    beta = 3.0 * np.exp(-0.3 * t) + rng.normal(0, 0.05, n_epochs)
    acc = 0.85 - 0.08 * beta + rng.normal(0, 0.01, n_epochs)
    return beta, np.round(np.clip(acc, 0, 1) * n_val) / n_val


def _sd(v: np.ndarray) -> float:
    return float(np.std(v)) or 1.0


def _hand_window(x: np.ndarray, y: np.ndarray) -> tuple[BayesianRidge, float]:
    """BayesianRidge on the window scaled by its standard deviations, and its BIC_z.

    BIC_z written out independently: n ln(RSS / SS_y) + 3 ln n, RSS of the
    posterior-mean line in the original units, the ratio floored at 1e-9 (an exact fit).
    """
    sx, sy = _sd(x), _sd(y)
    model = BayesianRidge().fit(x.reshape(-1, 1) / sx, y / sy)
    fitted = sy * (model.intercept_ + model.coef_[0] * x / sx)
    rss = float(np.sum((y - fitted) ** 2))
    ss_y = float(np.sum((y - y.mean()) ** 2))
    if np.ptp(y) == 0:
        return model, math.nan
    bic = len(y) * math.log(max(rss / ss_y, 1e-9)) + 3 * math.log(len(y))
    return model, bic


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_epochs,k", [(5, 5), (8, 3), (12, 5), (7, 2)])
def test_matches_explicit_window_loop(seed: int, n_epochs: int, k: int) -> None:
    """The chosen window, its BIC_z and the prediction equal a loop written from the SPEC."""
    beta, acc = _curves(seed, n_epochs)
    fits = []
    for t0 in range(n_epochs - k + 1):
        x, y = beta[t0 : t0 + k], acc[t0 : t0 + k]
        model, bic = _hand_window(x, y)
        eligible = y.max() - y.min() >= 1 / N_VAL - 1e-12
        fits.append((bic, t0, model, _sd(x), _sd(y), eligible))
    pool = [f for f in fits if f[5]]
    # Smallest BIC_z; ties (within 1e-9) to the later window.
    low = min(f[0] for f in pool)
    best_bic, best_t0, best_model, sx, sy, _ = max(
        (f for f in pool if f[0] <= low + 1e-9), key=lambda f: f[1]
    )
    mean, std = best_model.predict(np.zeros((1, 1)), return_std=True)

    pred = predict_final(beta, acc, k=k, n_val=N_VAL)

    assert pred.t0 == best_t0 and pred.k == k
    assert pred.bic == pytest.approx(best_bic, rel=1e-9, abs=1e-9)
    assert pred.raw_predicted == pytest.approx(sy * mean[0], rel=1e-12)
    assert pred.predicted == pytest.approx(min(1.0, max(0.0, sy * mean[0])), rel=1e-12)
    assert pred.std == pytest.approx(sy * std[0], rel=1e-12)
    assert pred.slope == pytest.approx(best_model.coef_[0] * sy / sx, rel=1e-12)
    assert pred.noise_precision == pytest.approx(best_model.alpha_ / sy**2, rel=1e-12)
    assert pred.intercept == pytest.approx(pred.raw_predicted, rel=1e-12)
    np.testing.assert_array_equal(pred.window_beta, beta[best_t0 : best_t0 + k])
    np.testing.assert_array_equal(pred.window_acc, acc[best_t0 : best_t0 + k])
    assert [t for t, _ in pred.bic_by_t0] == list(range(n_epochs - k + 1))
    for (_, got), (want, *_) in zip(pred.bic_by_t0, fits, strict=True):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9, nan_ok=True)
    assert pred.eligible_t0 == tuple(f[1] for f in pool)
    assert float(pred) == pred.predicted


def test_bic_z_by_hand_numbers() -> None:
    """A fixed window: BIC_z from the residuals of the fitted line, at most p ln n."""
    x = np.array([2.0, 1.5, 1.1, 0.8, 0.6])
    y = np.array([0.61, 0.66, 0.70, 0.74, 0.75])
    sx, sy = float(np.std(x)), float(np.std(y))
    model = BayesianRidge().fit(x.reshape(-1, 1) / sx, y / sy)
    resid = y - sy * (model.intercept_ + model.coef_[0] * x / sx)
    want = 5 * math.log(float(resid @ resid) / float(np.sum((y - y.mean()) ** 2))) + 3 * math.log(5)
    assert window_bic(model, x, y, x_scale=sx, y_scale=sy) == pytest.approx(want, rel=1e-12)
    assert predict_final(x, y).bic == pytest.approx(want, rel=1e-12)
    assert want < 3 * math.log(5)


def test_bic_z_is_scale_free_and_bounded() -> None:
    """Rescaling the accuracies' spread does not change BIC_z; noise alone gives ~p ln n."""
    rng = np.random.default_rng(3)
    x = np.linspace(2.0, 0.5, 5)
    y = 0.5 + 0.01 * rng.normal(size=5)
    a = predict_final(x, y, t0=0)
    b = predict_final(x, 0.5 + 10 * (y - 0.5), t0=0)
    assert a.bic == pytest.approx(b.bic, rel=1e-6)
    for seed in range(20):
        noise = 0.5 + 0.02 * np.random.default_rng(seed).normal(size=5)
        assert predict_final(x, noise, t0=0).bic <= 3 * math.log(5) + 1e-9


def test_given_t0_is_used() -> None:
    beta, acc = _curves(3, 10)
    pred = predict_final(beta, acc, k=4, t0=6, n_val=N_VAL)
    model, bic = _hand_window(beta[6:10], acc[6:10])
    assert pred.t0 == 6
    assert pred.bic_by_t0 == ((6, pytest.approx(bic)),)
    sy = _sd(acc[6:10])
    assert pred.raw_predicted == pytest.approx(sy * model.predict(np.zeros((1, 1)))[0], rel=1e-12)


@pytest.mark.parametrize("chance_epochs", [2, 4, 6, 9])
@pytest.mark.parametrize("k", [3, 5])
def test_flat_window_at_chance_never_wins_over_a_learning_window(chance_epochs, k) -> None:
    """Accuracy stuck at 0.2 (5 classes) for some epochs, then learning: a learning window wins.

    The flat windows fit a constant perfectly (RSS = 0); with raw-unit BICs they
    won. Here they are not eligible (the accuracy spans less than one sample).
    """
    n_epochs = chance_epochs + 6
    beta = np.concatenate([np.linspace(5.0, 4.6, chance_epochs), np.linspace(4.0, 1.0, 6)])
    acc = np.concatenate([np.full(chance_epochs, 0.2), np.linspace(0.35, 0.80, 6)])
    acc = np.round(acc * N_VAL) / N_VAL
    pred = predict_final(beta, acc, k=k, n_val=N_VAL, num_classes=5)
    window = acc[pred.t0 : pred.t0 + k]
    assert np.ptp(window) >= 1 / N_VAL - 1e-12
    assert pred.t0 + k > chance_epochs  # the window reaches into the learning epochs
    assert all(t + k > chance_epochs for t in pred.eligible_t0)
    assert "no_eligible_window" not in pred.flags and "at_chance" not in pred.flags
    assert n_epochs - k + 1 == len(pred.bic_by_t0)


@pytest.mark.parametrize("jitter", [(0, 1, 0, 0, 1), (1, 0, 1, 0, 1), (0, 0, 1, 0, 0)])
def test_chance_window_with_one_sample_jitter_loses_to_learning(jitter) -> None:
    """At chance with a one-sample wobble the window is eligible, but the line explains nothing.

    Its BIC_z stays near p ln n, while a learning window's line explains most
    of its variation (a negative BIC_z).
    """
    beta = np.array([5.0, 4.9, 4.8, 4.7, 4.6, 4.0, 3.4, 2.8, 2.2, 1.6])
    acc = np.concatenate([0.2 + np.array(jitter) / N_VAL, [0.35, 0.47, 0.58, 0.66, 0.72]])
    pred = predict_final(beta, acc, k=5, n_val=N_VAL, num_classes=5)
    assert 0 in pred.eligible_t0  # the jittered window competes
    assert pred.t0 > 0  # not the one window that lies wholly at chance (epochs 0-4)
    bics = dict(pred.bic_by_t0)
    assert bics[0] > 3 * math.log(5) - 3.0 and bics[0] > bics[5] + 5.0


def test_two_epoch_windows_fit_exactly_and_tie() -> None:
    """k = 2: every window is fitted exactly, all BIC_z tie and the last window is used."""
    beta, acc = _curves(2, 7)
    pred = predict_final(beta, acc, k=2, n_val=N_VAL)
    assert {b for _, b in pred.bic_by_t0} == {2 * math.log(1e-9) + 3 * math.log(2)}
    assert pred.t0 == 5


def test_ties_go_to_the_later_window() -> None:
    """Windows 0 and 2 hold identical observations: the later one is used."""
    beta = np.array([2.0, 1.0, 1.5, 2.0, 1.0, 1.5])
    acc = np.array([0.50, 0.62, 0.55, 0.50, 0.62, 0.55])
    pred = predict_final(beta, acc, k=3, t0=None, n_val=100)
    bics = dict(pred.bic_by_t0)
    assert bics[0] == bics[3]
    low = min(bics.values())
    assert pred.t0 == max(t for t, b in bics.items() if b <= low + 1e-9)
    assert pred.t0 >= 3


def test_constant_accuracy_windows_are_ineligible_without_n_val() -> None:
    """Without n_val only a window of constant accuracy is left out (its BIC_z is undefined)."""
    beta = np.array([3.0, 2.8, 2.6, 2.0, 1.5, 1.0])
    acc = np.array([0.2, 0.2, 0.2, 0.4, 0.5, 0.6])
    pred = predict_final(beta, acc, k=3)
    assert 0 not in pred.eligible_t0 and math.isnan(dict(pred.bic_by_t0)[0])
    assert pred.t0 in pred.eligible_t0


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("beta_unit", [1e-6, 1e4])
def test_prediction_does_not_depend_on_the_units_of_beta(seed: int, beta_unit: float) -> None:
    """beta_eff scales with the loss (SPEC section 1); the prediction must not."""
    beta, acc = _curves(seed, 9)
    ref = predict_final(beta, acc, n_val=N_VAL)
    got = predict_final(beta * beta_unit, acc, n_val=N_VAL)
    assert got.t0 == ref.t0
    assert got.raw_predicted == pytest.approx(ref.raw_predicted, rel=1e-9)
    assert got.std == pytest.approx(ref.std, rel=1e-9)
    assert got.slope == pytest.approx(ref.slope / beta_unit, rel=1e-9)


@pytest.mark.parametrize("intercept,slope", [(0.9, -0.05), (0.42, -0.06), (0.7, 0.02)])
def test_exactly_linear_data_gives_exact_intercept(intercept: float, slope: float) -> None:
    beta = np.array([4.0, 3.1, 2.5, 1.7, 1.2, 0.9])
    acc = intercept + slope * beta
    pred = predict_final(beta, acc, k=5)
    # Exact up to the shrinkage left by sklearn's default Gamma hyperpriors
    # (alpha_2 = 1e-6 caps the noise precision).
    assert pred.raw_predicted == pytest.approx(intercept, abs=1e-6)
    assert pred.slope == pytest.approx(slope, rel=1e-5)
    assert pred.std < 1e-2
    assert math.isfinite(pred.bic)


def test_line_for_plots() -> None:
    beta, acc = _curves(4, 9)
    pred = predict_final(beta, acc)
    mean, std = pred.line([0.0])
    assert mean[0] == pytest.approx(pred.raw_predicted) and std[0] == pytest.approx(pred.std)
    grid = np.linspace(0.0, 3.0, 7)
    mean, std = pred.line(grid)
    np.testing.assert_allclose(mean, pred.intercept + pred.slope * grid, rtol=1e-12)
    assert mean.shape == std.shape == grid.shape
    assert np.all(std >= math.sqrt(1.0 / pred.noise_precision) - 1e-12)


def test_to_dict_is_json() -> None:
    """to_dict is strict JSON (an undefined BIC_z becomes null) and carries the flags."""
    beta = np.array([3.0, 2.8, 2.6, 2.0, 1.5, 1.0])
    acc = np.array([0.2, 0.2, 0.2, 0.4, 0.5, 0.6])
    pred = predict_final(beta, acc, k=3, n_val=50, num_classes=5)
    back = json.loads(json.dumps(pred.to_dict(), allow_nan=False))
    assert back["predicted"] == pytest.approx(pred.predicted)
    assert back["bic_by_t0"][0] == [0, None]
    assert back["flags"] == list(pred.flags) and back["n_val"] == 50
    assert back["eligible_t0"] == list(pred.eligible_t0)


def test_lazy_export() -> None:
    assert ncap.predict_final is predict_final
    assert ncap.Prediction is Prediction


def test_constant_beta_warns() -> None:
    with pytest.warns(RuntimeWarning, match="beta is constant"):
        pred = predict_final([1.0] * 5, [0.5, 0.6, 0.55, 0.62, 0.58])
    assert pred.predicted == pytest.approx(np.mean([0.5, 0.6, 0.55, 0.62, 0.58]), abs=1e-6)


def test_no_warning_on_ordinary_curves() -> None:
    beta, acc = _curves(6, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predict_final(beta, acc, n_val=N_VAL, num_classes=5)


@pytest.mark.parametrize(
    "beta,acc,kwargs,exc,match",
    [
        ([1.0, 0.5, 0.3], [0.5, 0.6, 0.7], {}, ValueError, "too short.*k=5"),
        ([1.0, np.nan, 0.3, 0.2, 0.1], [0.5] * 5, {}, ValueError, "beta contains NaN"),
        ([1.0, 0.5, 0.3, 0.2, 0.1], [0.5, 0.6, np.inf, 0.7, 0.7], {}, ValueError, "val_acc"),
        ([1.0, 0.5, 0.3, 0.2, 0.1], [0.5] * 6, {}, ValueError, "same length"),
        ([1.0, 0.5, 0.3], [50.0, 60.0, 70.0], {"k": 2}, ValueError, "fractions in \\[0, 1\\]"),
        ([1.0, 0.5, 0.3], [0.5, -0.1, 0.7], {"k": 2}, ValueError, "fractions"),
        ([1.0, 0.5, 0.3], [0.5, 0.6, 0.7], {"k": 1}, ValueError, "k must be >= 2"),
        ([1.0, 0.5, 0.3], [0.5, 0.6, 0.7], {"k": 2.0}, TypeError, "k must be an int"),
        ([1.0, 0.5, 0.3], [0.5, 0.6, 0.7], {"k": 2, "t0": 2}, ValueError, "t0 must be in 0..1"),
        ([1.0, 0.5, 0.3], [0.5, 0.6, 0.7], {"k": 2, "t0": -1}, ValueError, "t0"),
        ([1.0, 0.5, 0.3], [0.5, 0.6, 0.7], {"k": 2, "n_val": 0}, ValueError, "n_val must be >= 1"),
        ([1.0, 0.5, 0.3], [0.5, 0.6, 0.7], {"k": 2, "n_val": 9.5}, TypeError, "n_val must be an"),
        ([1.0, 0.5], [0.5, 0.6], {"k": 2, "num_classes": 1}, ValueError, "num_classes must be"),
        ([1.0, 0.5], [0.5, 0.6], {"k": 2, "num_classes": True}, TypeError, "num_classes"),
        ([[1.0, 0.5], [0.3, 0.2]], [0.5, 0.6], {"k": 2}, ValueError, "beta must be 1-D"),
        ([], [], {"k": 2}, ValueError, "beta is empty"),
        (["a", "b"], [0.5, 0.6], {"k": 2}, TypeError, "beta must be"),
    ],
)
def test_bad_input(beta, acc, kwargs, exc, match) -> None:
    with pytest.raises(exc, match=match):
        predict_final(beta, acc, **kwargs)


def test_float32_accuracies_keep_their_one_sample_spans() -> None:
    """Keras reports accuracies in float32: a span of one sample must stay eligible.

    float32(1/179) - float32(0/179) falls short of 1/179 by a rounding error.
    """
    n_val = 179
    counts = np.array([0, 1, 1, 0, 4, 9])
    acc = (counts / n_val).astype(np.float32).astype(np.float64)
    assert acc[1] - acc[0] < 1 / n_val
    beta = np.linspace(3.0, 1.0, 6)
    pred = predict_final(beta, acc, k=3, n_val=n_val)
    assert pred.eligible_t0 == (0, 1, 2, 3)
    flat = predict_final(beta, np.full(6, np.float32(0.275)), k=3, n_val=n_val)
    assert flat.eligible_t0 == () and "no_eligible_window" in flat.flags
