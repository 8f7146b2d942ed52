"""Ranking metrics against scipy.stats and hand-worked examples."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from ncap.selection.metrics import kendall, pearson, ranking_metrics, spearman, top1_regret


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n", [3, 7, 20])
def test_correlations_match_scipy(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.5, 0.95, n)
    pred = truth + rng.normal(0, 0.05, n)
    assert spearman(pred, truth) == pytest.approx(stats.spearmanr(pred, truth)[0], rel=1e-12)
    assert kendall(pred, truth) == pytest.approx(stats.kendalltau(pred, truth)[0], rel=1e-12)
    assert pearson(pred, truth) == pytest.approx(stats.pearsonr(pred, truth)[0], rel=1e-12)
    assert all(isinstance(f(pred, truth), float) for f in (spearman, kendall, pearson))


def test_perfect_and_reversed_rankings() -> None:
    truth = [0.6, 0.7, 0.8, 0.9]
    assert spearman([1, 2, 3, 4], truth) == pytest.approx(1.0)
    assert kendall([1, 2, 3, 4], truth) == pytest.approx(1.0)
    assert spearman([4, 3, 2, 1], truth) == pytest.approx(-1.0)
    assert kendall([4, 3, 2, 1], truth) == pytest.approx(-1.0)
    # Monotone but not linear: rank correlations are 1, Pearson is below.
    assert pearson([1, 2, 3, 100], truth) < 0.9


def test_top1_regret() -> None:
    truth = [0.70, 0.90, 0.80]
    assert top1_regret([0.1, 0.9, 0.5], truth) == 0.0
    assert top1_regret([0.9, 0.1, 0.5], truth) == pytest.approx(0.20)
    assert top1_regret([0.1, 0.2, 0.5], truth) == pytest.approx(0.10)
    # Ties in the scores go to the first candidate.
    assert top1_regret([0.5, 0.5, 0.1], truth) == pytest.approx(0.20)


def test_non_finite_pairs_are_left_out() -> None:
    pred = [0.1, math.nan, 0.3, 0.2, 0.9]
    truth = [0.5, 0.99, 0.7, 0.6, math.nan]
    assert spearman(pred, truth) == pytest.approx(1.0)
    assert top1_regret(pred, truth) == 0.0  # the NaN candidates cannot be picked or counted
    want = stats.pearsonr([0.1, 0.3, 0.2], [0.5, 0.7, 0.6])[0]
    assert pearson(pred, truth) == pytest.approx(want)


def test_constant_input_is_nan() -> None:
    assert math.isnan(spearman([1, 1, 1], [0.1, 0.2, 0.3]))
    assert math.isnan(pearson([1, 2, 3], [0.5, 0.5, 0.5]))


def test_ranking_metrics_dict() -> None:
    scores, truth = [0.3, 0.1, 0.2], [0.8, 0.6, 0.9]
    m = ranking_metrics(scores, truth)
    assert set(m) == {"spearman", "kendall", "pearson", "top1_regret"}
    assert m["spearman"] == spearman(scores, truth)
    assert m["kendall"] == kendall(scores, truth)
    assert m["pearson"] == pearson(scores, truth)
    assert m["top1_regret"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    "fn,pred,truth,exc,match",
    [
        (spearman, [0.1], [0.2], ValueError, "at least 2"),
        (kendall, [0.1, math.nan], [0.2, 0.3], ValueError, "at least 2.*got 1 of 2"),
        (pearson, [0.1, 0.2], [0.2, 0.3, 0.4], ValueError, "same length"),
        (spearman, [[0.1, 0.2]], [[0.2, 0.3]], ValueError, "1-D"),
        (top1_regret, [math.nan], [0.5], ValueError, "at least 1"),
        (ranking_metrics, ["a", "b"], [0.1, 0.2], TypeError, "numbers"),
    ],
)
def test_bad_input(fn, pred, truth, exc, match) -> None:
    with pytest.raises(exc, match=match):
        fn(pred, truth)
