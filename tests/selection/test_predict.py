"""ncap.predict_final against BayesianRidge fits and BIC choices computed here."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.linear_model import BayesianRidge

import ncap
from ncap.selection.predict import Prediction, predict_final, window_bic


def _curves(seed: int, n_epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """A noisy fine-tuning record: beta decays towards 0 while accuracy rises."""
    rng = np.random.default_rng(seed)
    t = np.arange(1, n_epochs + 1)
    beta = 3.0 * np.exp(-0.3 * t) + rng.normal(0, 0.05, n_epochs)
    acc = 0.85 - 0.08 * beta + rng.normal(0, 0.01, n_epochs)
    return beta, acc


def _sd(v: np.ndarray) -> float:
    return float(np.std(v)) or 1.0


def _hand_fit(x: np.ndarray, y: np.ndarray) -> tuple[BayesianRidge, float, float, float]:
    """BayesianRidge on the window scaled by its standard deviations, and its BIC.

    The BIC is written independently: Gaussian log-density of the residuals in
    the original units, noise sd = y-scale / sqrt(alpha_), 3 parameters.
    """
    sx, sy = _sd(x), _sd(y)
    model = BayesianRidge().fit(x.reshape(-1, 1) / sx, y / sy)
    resid = y - sy * model.predict(x.reshape(-1, 1) / sx)
    loglik = norm.logpdf(resid, loc=0.0, scale=sy / math.sqrt(model.alpha_)).sum()
    return model, sx, sy, -2.0 * loglik + 3 * math.log(len(y))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n_epochs,k", [(5, 5), (8, 3), (12, 5), (7, 2)])
def test_matches_explicit_bic_loop(seed: int, n_epochs: int, k: int) -> None:
    beta, acc = _curves(seed, n_epochs)
    fits = []
    for t0 in range(n_epochs - k + 1):
        model, sx, sy, bic = _hand_fit(beta[t0 : t0 + k], acc[t0 : t0 + k])
        fits.append((bic, t0, model, sx, sy))
    best_bic, best_t0, best_model, sx, sy = min(fits, key=lambda f: (f[0], f[1]))
    mean, std = best_model.predict(np.zeros((1, 1)), return_std=True)

    pred = predict_final(beta, acc, k=k)

    assert pred.t0 == best_t0
    assert pred.k == k
    assert pred.bic == pytest.approx(best_bic, rel=1e-10, abs=1e-10)
    assert pred.predicted == pytest.approx(sy * mean[0], rel=1e-12)
    assert pred.std == pytest.approx(sy * std[0], rel=1e-12)
    assert pred.slope == pytest.approx(best_model.coef_[0] * sy / sx, rel=1e-12)
    assert pred.noise_precision == pytest.approx(best_model.alpha_ / sy**2, rel=1e-12)
    assert pred.intercept == pytest.approx(pred.predicted, rel=1e-12)
    np.testing.assert_array_equal(pred.window_beta, beta[best_t0 : best_t0 + k])
    np.testing.assert_array_equal(pred.window_acc, acc[best_t0 : best_t0 + k])
    assert [t for t, _ in pred.bic_by_t0] == list(range(n_epochs - k + 1))
    for (_, got), (want, *_) in zip(pred.bic_by_t0, fits, strict=False):
        assert got == pytest.approx(want, rel=1e-10, abs=1e-10)
    assert float(pred) == pred.predicted


def test_bic_by_hand_numbers() -> None:
    # Fixed window; the BIC is recomputed from the fitted noise precision alone.
    x = np.array([2.0, 1.5, 1.1, 0.8, 0.6])
    y = np.array([0.61, 0.66, 0.70, 0.74, 0.75])
    sx, sy = float(np.std(x)), float(np.std(y))
    model = BayesianRidge().fit(x.reshape(-1, 1) / sx, y / sy)
    resid = y - sy * (model.intercept_ + model.coef_[0] * x / sx)
    a = model.alpha_ / sy**2  # noise precision in accuracy units
    loglik = 2.5 * math.log(a / (2 * math.pi)) - 0.5 * a * float(resid @ resid)
    want = -2.0 * loglik + 3 * math.log(5)
    assert window_bic(model, x, y, x_scale=sx, y_scale=sy) == pytest.approx(want, rel=1e-12)
    assert predict_final(x, y).bic == pytest.approx(want, rel=1e-12)


def test_given_t0_is_used() -> None:
    beta, acc = _curves(3, 10)
    pred = predict_final(beta, acc, k=4, t0=6)
    model, _, sy, bic = _hand_fit(beta[6:10], acc[6:10])
    assert pred.t0 == 6
    assert pred.bic_by_t0 == ((6, pytest.approx(bic)),)
    assert pred.predicted == pytest.approx(sy * model.predict(np.zeros((1, 1)))[0], rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("beta_unit,acc_unit", [(1e-6, 1.0), (1e4, 1.0), (1.0, 100.0)])
def test_prediction_does_not_depend_on_units(seed: int, beta_unit: float, acc_unit: float) -> None:
    # beta_eff scales with the loss (SPEC section 1) and accuracies may be percentages.
    beta, acc = _curves(seed, 9)
    ref = predict_final(beta, acc)
    got = predict_final(beta * beta_unit, acc * acc_unit)
    assert got.t0 == ref.t0
    assert got.predicted == pytest.approx(ref.predicted * acc_unit, rel=1e-9)
    assert got.std == pytest.approx(ref.std * acc_unit, rel=1e-9)
    assert got.slope == pytest.approx(ref.slope * acc_unit / beta_unit, rel=1e-9)


@pytest.mark.parametrize("intercept,slope", [(0.9, -0.05), (0.42, -0.3), (0.7, 0.02)])
def test_exactly_linear_data_gives_exact_intercept(intercept: float, slope: float) -> None:
    beta = np.array([4.0, 3.1, 2.5, 1.7, 1.2, 0.9])
    acc = intercept + slope * beta
    pred = predict_final(beta, acc, k=5)
    # Exact up to the shrinkage left by sklearn's default Gamma hyperpriors
    # (alpha_2 = 1e-6 caps the noise precision).
    assert pred.predicted == pytest.approx(intercept, abs=1e-6)
    assert pred.slope == pytest.approx(slope, rel=1e-5)
    assert pred.std < 1e-2


def test_line_for_plots() -> None:
    beta, acc = _curves(4, 9)
    pred = predict_final(beta, acc)
    mean, std = pred.line([0.0])
    assert mean[0] == pytest.approx(pred.predicted) and std[0] == pytest.approx(pred.std)
    grid = np.linspace(0.0, 3.0, 7)
    mean, std = pred.line(grid)
    np.testing.assert_allclose(mean, pred.intercept + pred.slope * grid, rtol=1e-12)
    assert mean.shape == std.shape == grid.shape
    assert np.all(std >= math.sqrt(1.0 / pred.noise_precision) - 1e-12)


def test_to_dict_is_json() -> None:
    beta, acc = _curves(5, 6)
    d = predict_final(beta, acc).to_dict()
    back = json.loads(json.dumps(d))
    assert back["predicted"] == pytest.approx(d["predicted"])
    assert set(back) >= {"predicted", "std", "t0", "k", "slope", "intercept", "bic"}


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
        predict_final(beta, acc)


@pytest.mark.parametrize(
    "beta,acc,kwargs,exc,match",
    [
        ([1.0, 0.5, 0.3], [0.5, 0.6, 0.7], {}, ValueError, "too short.*k=5"),
        ([1.0, np.nan, 0.3, 0.2, 0.1], [0.5] * 5, {}, ValueError, "beta contains NaN"),
        ([1.0, 0.5, 0.3, 0.2, 0.1], [0.5, 0.6, np.inf, 0.7, 0.7], {}, ValueError, "val_acc"),
        ([1.0, 0.5, 0.3, 0.2, 0.1], [0.5] * 6, {}, ValueError, "same length"),
        ([1.0, 0.5, 0.3], [0.5, 0.6, 0.7], {"k": 1}, ValueError, "k must be >= 2"),
        ([1.0, 0.5, 0.3], [0.5, 0.6, 0.7], {"k": 2.0}, TypeError, "k must be an int"),
        ([1.0, 0.5, 0.3], [0.5, 0.6, 0.7], {"k": 2, "t0": 2}, ValueError, "t0 must be in 0..1"),
        ([1.0, 0.5, 0.3], [0.5, 0.6, 0.7], {"k": 2, "t0": -1}, ValueError, "t0"),
        ([[1.0, 0.5], [0.3, 0.2]], [0.5, 0.6], {"k": 2}, ValueError, "beta must be 1-D"),
        ([], [], {"k": 2}, ValueError, "beta is empty"),
        (["a", "b"], [0.5, 0.6], {"k": 2}, TypeError, "beta must be"),
    ],
)
def test_bad_input(beta, acc, kwargs, exc, match) -> None:
    with pytest.raises(exc, match=match):
        predict_final(beta, acc, **kwargs)
