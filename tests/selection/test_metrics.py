"""Ranking metrics against scipy.stats and hand-worked examples."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from ncap.selection.metrics import (
    accuracy_metrics,
    kendall,
    pearson,
    ranking_metrics,
    seed_ceiling,
    spearman,
    top1_regret,
)


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


def test_accuracy_metrics_by_hand() -> None:
    """MAE, bias and coverage on numbers worked out by hand."""
    pred = [0.80, 0.70, 0.95, 0.50]
    truth = [0.90, 0.70, 0.85, 0.60]
    std = [0.05, 0.01, 0.20, 0.04]
    m = accuracy_metrics(pred, truth, std)
    assert m["mae"] == pytest.approx((0.10 + 0.0 + 0.10 + 0.10) / 4)
    assert m["bias"] == pytest.approx((-0.10 + 0.0 + 0.10 - 0.10) / 4)
    # |err| / std = 2, 0, 0.5, 2.5: within 1 std: 2 of 4; within 2 std: 3 of 4.
    assert m["within_1std"] == pytest.approx(0.5) and m["within_2std"] == pytest.approx(0.75)
    assert m["n"] == 4 and m["n_std"] == 4
    assert set(accuracy_metrics(pred, truth)) == {"mae", "bias", "n"}


def test_accuracy_metrics_leave_out_missing_values() -> None:
    m = accuracy_metrics([0.5, math.nan, 0.7], [0.6, 0.9, 0.7], [0.2, 0.1, math.nan])
    assert m["n"] == 2 and m["mae"] == pytest.approx(0.05) and m["bias"] == pytest.approx(-0.05)
    assert m["n_std"] == 1 and m["within_1std"] == 1.0
    with pytest.raises(ValueError, match="at least 1"):
        accuracy_metrics([math.nan], [0.5])
    with pytest.raises(ValueError, match="std must have one value per candidate"):
        accuracy_metrics([0.5, 0.6], [0.5, 0.6], [0.1])


def test_seed_ceiling_is_the_mean_pairwise_spearman() -> None:
    truths = np.array([[0.9, 0.8, 0.7, 0.6], [0.9, 0.7, 0.8, 0.6], [0.6, 0.7, 0.8, 0.9]])
    c = seed_ceiling(truths)
    want = [
        (0, 1, stats.spearmanr(truths[0], truths[1])[0]),
        (0, 2, -1.0),
        (1, 2, stats.spearmanr(truths[1], truths[2])[0]),
    ]
    for (i, j, r), (wi, wj, wr) in zip(c["pairs"], want, strict=True):
        assert (i, j) == (wi, wj) and r == pytest.approx(wr)
    assert c["spearman"] == pytest.approx(np.mean([w[2] for w in want]))
    with pytest.raises(ValueError, match="at least 2 seeds"):
        seed_ceiling([[0.1, 0.2, 0.3]])


# --- in the report ----------------------------------------------------------------


def _report(seed_truths=None):
    from ncap.selection.record import CandidateRecord
    from ncap.selection.report import CandidateResult, SelectionReport
    from ncap.selection.scoring import score_record

    rng = np.random.default_rng(4)
    results = []
    for i in range(4):
        beta = np.linspace(3.0, 1.0, 6) + rng.normal(0, 0.05, 6)
        acc = np.round((0.4 + 0.05 * i - 0.05 * beta + rng.normal(0, 0.01, 6)) * 100) / 100
        rec = CandidateRecord(
            name=f"m{i}",
            candidate={"kind": "callable"},
            key="k",
            status="ok",
            epochs_trained=6,
            beta=list(beta),
            val_accuracy=list(acc),
            truth=0.5 + 0.1 * i,
            truth_epoch=20,
            logme=float(-i),  # LogME ranks them backwards
            seed_truths=[] if seed_truths is None else list(seed_truths[i]),
        )
        scores = score_record(rec, epochs=6, k=5, t0=None, final_epoch=20, n_val=100, num_classes=5)
        results.append(CandidateResult(rec, scores, 6))
    return SelectionReport.build(results, {"epochs": 6, "truth_epochs": 20}, {"name": "syn"})


def test_report_judges_every_predicted_accuracy() -> None:
    """MAE and bias for each method that predicts an accuracy, coverage for ncap, none for LogME."""
    rep = _report()
    truth = [c.truth for c in rep.candidates]
    for m in ("ncap", "last_seen", "best_seen", "curve_extrapolation"):
        pred = [c.scores.values[m] for c in rep.candidates]
        std = [c.std for c in rep.candidates] if m == "ncap" else None
        assert rep.accuracy[m] == pytest.approx(accuracy_metrics(pred, truth, std))
    assert "within_2std" in rep.accuracy["ncap"] and "within_2std" not in rep.accuracy["last_seen"]
    assert "logme" not in rep.accuracy
    doc = rep.to_dict()
    assert doc["methods"]["logme"]["accuracy"] is None
    assert doc["methods"]["ncap"]["accuracy"]["mae"] == pytest.approx(rep.accuracy["ncap"]["mae"])
    table = rep.table()
    assert "MAE" in table and "bias" in table and "in 2sd" in table
    assert "posterior predictive std" in table


def test_picks_say_each_method_and_whether_they_agree() -> None:
    rep = _report()
    picks = rep.picks()
    assert picks["logme"] == "m0" and picks["best_seen"] == "m3"
    assert not rep.picks_agree
    doc = rep.to_dict()
    assert doc["picks"] == picks and doc["picks_agree"] is False
    assert doc["best"] == rep.ranking("ncap")[0]  # ncap's pick, kept beside "picks"
    head = next(line for line in rep.table().splitlines() if line.startswith("picks:"))
    assert "LogME m0" in head and "disagree" in head


def test_report_judges_against_the_mean_of_the_truth_seeds() -> None:
    seeds = [[0.50, 0.52, 0.48], [0.61, 0.59, 0.60], [0.70, 0.72, 0.74], [0.80, 0.79, 0.75]]
    rep = _report(seeds)
    by = {c.name: c for c in rep.candidates}
    assert by["m1"].truth == pytest.approx(0.60) and by["m1"].truths == seeds[1]
    want = ranking_metrics(
        [c.scores.values["ncap"] for c in rep.candidates], [c.truth for c in rep.candidates]
    )
    assert rep.metrics["ncap"] == pytest.approx(want)
    assert rep.ceiling == seed_ceiling(np.array([by[f"m{i}"].truths for i in range(4)]).T)
    doc = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    assert doc["seed_ceiling"]["spearman"] == pytest.approx(rep.ceiling["spearman"])
    assert "seed-noise ceiling" in rep.table()
