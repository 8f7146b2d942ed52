"""Baselines on synthetic learning curves whose answers are known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ncap.selection import baselines
from ncap.selection.baselines import (
    FAMILIES,
    best_seen,
    curve_extrapolation,
    last_seen,
)
from ncap.selection.logme import logme

# One generating curve per family, parameters inside the fitting bounds.
GENERATORS = {
    "pow3": (0.9, 0.5, 0.8),
    "exp3": (0.85, 0.4, 0.3),
    "log_power": (0.92, 1.0, 1.5),
    "janoschek": (0.9, 0.1, 0.4, 0.7),
    "mmf": (0.88, 0.1, 0.5, 1.3),
}
FAMILY = {f.name: f for f in FAMILIES}


@pytest.mark.parametrize(
    "curve,last,best",
    [([0.3], 0.3, 0.3), ([0.2, 0.5, 0.4], 0.4, 0.5), (np.array([0.1, 0.2, 0.9, 0.95]), 0.95, 0.95)],
)
def test_last_and_best_seen(curve, last, best) -> None:
    assert last_seen(curve) == last
    assert best_seen(curve) == best
    assert isinstance(last_seen(curve), float) and isinstance(best_seen(curve), float)


@pytest.mark.parametrize("fn", [last_seen, best_seen])
def test_last_best_reject_bad_curves(fn) -> None:
    with pytest.raises(ValueError, match="val_acc contains NaN"):
        fn([0.1, math.nan])
    with pytest.raises(ValueError, match="val_acc is empty"):
        fn([])
    with pytest.raises(ValueError, match="val_acc must be 1-D"):
        fn([[0.1, 0.2]])


@pytest.mark.parametrize("name", list(GENERATORS))
def test_exact_curve_is_recovered(name: str) -> None:
    fam = FAMILY[name]
    params = GENERATORS[name]
    t = np.arange(1, 13, dtype=float)
    fit = curve_extrapolation(fam.func(t, *params), final_epoch=60)
    truth = float(fam.func(np.array([60.0]), *params)[0])
    assert fit.family == name
    assert not fit.fallback and fit.note is None
    assert fit.value == pytest.approx(truth, abs=1e-5)
    assert fit.final_epoch == 60
    np.testing.assert_allclose(fit.curve(t), fam.func(t, *params), atol=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("name", ["pow3", "exp3"])
def test_noisy_curve_extrapolates_within_tolerance(seed: int, name: str) -> None:
    fam = FAMILY[name]
    params = GENERATORS[name]
    rng = np.random.default_rng(seed)
    t = np.arange(1, 16, dtype=float)
    y = np.clip(fam.func(t, *params) + rng.normal(0.0, 0.003, t.size), 0.0, 1.0)
    truth = float(fam.func(np.array([50.0]), *params)[0])
    fit = curve_extrapolation(y, 50)
    assert abs(fit.value - truth) < 0.02
    # The extrapolation beats reading off the last point, which is still rising.
    assert abs(fit.value - truth) < abs(last_seen(y) - truth)


def test_bic_matches_hand_computation() -> None:
    rng = np.random.default_rng(7)
    t = np.arange(1, 11, dtype=float)
    y = 0.8 - 0.4 * t**-0.7 + rng.normal(0.0, 0.004, t.size)
    fit = curve_extrapolation(y, 30)
    fam = FAMILY[fit.family]
    resid = y - fam.func(t, *fit.params.values())
    n, p = t.size, len(fam.params)
    want = n * math.log(float(resid @ resid) / n) + (p + 1) * math.log(n)
    assert fit.bic == pytest.approx(want, rel=1e-9)
    assert fit.bic == min(b for b in fit.bic_by_family.values() if not math.isnan(b))
    assert set(fit.bic_by_family) == set(FAMILY)


def test_short_curve_falls_back_to_last_seen() -> None:
    fit = curve_extrapolation([0.4, 0.5, 0.55], 20)
    assert fit.fallback
    assert fit.family == "last_seen"
    assert fit.value == 0.55
    assert "3 epoch" in fit.note
    assert math.isnan(fit.bic)
    np.testing.assert_array_equal(fit.curve([1, 5, 20]), [0.55, 0.55, 0.55])


def test_four_epochs_only_three_parameter_families() -> None:
    fit = curve_extrapolation([0.4, 0.5, 0.55, 0.58], 20)
    assert not fit.fallback
    assert math.isnan(fit.bic_by_family["janoschek"]) and math.isnan(fit.bic_by_family["mmf"])
    assert fit.family in {"pow3", "exp3", "log_power"}
    assert 0.58 <= fit.value <= 1.0


def test_value_range_bounds_and_clipping() -> None:
    # A curve still climbing steeply: the asymptote must stay inside (0, 1).
    y = [0.1, 0.3, 0.5, 0.7, 0.85, 0.95]
    fit = curve_extrapolation(y, 200)
    assert 0.0 <= fit.value <= 1.0
    assert fit.params["a"] <= 1.0
    # The same curve in percent needs value_range=(0, 100).
    with pytest.raises(ValueError, match="value_range"):
        curve_extrapolation([v * 100 for v in y], 200)
    pct = curve_extrapolation([v * 100 for v in y], 200, value_range=(0, 100))
    assert pct.value == pytest.approx(100 * fit.value, rel=1e-3)


def test_unbounded_value_range() -> None:
    t = np.arange(1, 11, dtype=float)
    y = 5.0 - 3.0 * np.exp(-0.4 * (t - 1))
    fit = curve_extrapolation(y, 40, value_range=None)
    assert fit.family == "exp3"
    assert fit.value == pytest.approx(5.0 - 3.0 * math.exp(-0.4 * 39), abs=1e-5)


def test_to_dict_is_json() -> None:
    d = curve_extrapolation([0.4, 0.5, 0.55, 0.58, 0.6], 20).to_dict()
    back = json.loads(json.dumps(d, allow_nan=False))
    assert back["family"] == d["family"] and back["final_epoch"] == 20
    fb = curve_extrapolation([0.4], 20).to_dict()
    assert json.loads(json.dumps(fb, allow_nan=False))["bic"] is None


@pytest.mark.parametrize(
    "args,kwargs,exc,match",
    [
        (([0.1, 0.2, 0.3, 0.4], 0), {}, ValueError, "final_epoch must be >= 1"),
        (([0.1, 0.2, 0.3, 0.4], 5.0), {}, TypeError, "final_epoch must be an int"),
        (([0.1, math.inf, 0.3, 0.4], 5), {}, ValueError, "val_acc contains NaN or Inf"),
        (([0.1, 0.2, 0.3, 0.4], 5), {"value_range": (1, 0)}, ValueError, "value_range"),
        (([0.1, 0.2, 0.3, 0.4], 5), {"value_range": "x"}, ValueError, "value_range"),
    ],
)
def test_curve_extrapolation_bad_input(args, kwargs, exc, match) -> None:
    with pytest.raises(exc, match=match):
        curve_extrapolation(*args, **kwargs)


def test_logme_reexport() -> None:
    """The LogME baseline is importable from the baselines module."""
    assert baselines.logme is logme
