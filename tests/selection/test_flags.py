"""Every flag of a prediction, triggered by constructed curves; and how a report shows them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from ncap.selection.predict import FLAGS, chance_threshold, predict_final
from ncap.selection.record import CandidateRecord
from ncap.selection.report import CandidateResult, SelectionReport
from ncap.selection.scoring import score_record

N_VAL, CLASSES = 179, 5
DOWN = [5.0, 4.0, 3.0, 2.0, 1.0]  # beta falling towards 0, as in training

# name -> (beta, val_acc, predict_final keywords, the flags expected exactly)
CASES = {
    "ordinary": (DOWN, [0.50, 0.58, 0.65, 0.71, 0.76], {}, set()),
    "above_one": (DOWN, [0.55, 0.65, 0.75, 0.85, 0.95], {}, {"clipped"}),
    "below_zero": (DOWN, [0.90, 0.70, 0.50, 0.30, 0.10], {}, {"clipped", "below_best_seen"}),
    "below_best_seen": (DOWN, [0.80, 0.78, 0.76, 0.74, 0.72], {}, {"below_best_seen"}),
    "flat": (DOWN, [0.6] * 5, {}, {"no_eligible_window"}),
    "given_flat_window": (
        [5.0, 4.5, 4.0, 3.0, 2.0, 1.0],
        [0.2, 0.2, 0.2, 0.5, 0.6, 0.7],
        {"k": 3, "t0": 0},
        {"window_not_eligible", "below_best_seen"},
    ),
    "at_chance": (DOWN, [0.20, 0.21, 0.20, 0.22, 0.21], {}, {"at_chance", "below_best_seen"}),
    # Accuracy rises while beta rises: h(0) lies below everything observed.
    "beta_rising": (
        [1.0, 2.0, 3.0, 4.0, 5.0],
        [0.50, 0.58, 0.65, 0.71, 0.76],
        {},
        {"beta_not_decreasing", "below_best_seen"},
    ),
}


def _predict(name: str):
    beta, acc, kw, _ = CASES[name]
    args = {"n_val": N_VAL, "num_classes": CLASSES, "k": 5, **kw}
    return predict_final(beta, np.round(np.array(acc) * N_VAL) / N_VAL, **args)


@pytest.mark.parametrize("name", sorted(CASES))
def test_constructed_curves_raise_the_flags_they_should(name: str) -> None:
    """Each constructed record carries exactly the flags its numbers call for."""
    pred = _predict(name)
    want = CASES[name][3]
    assert set(pred.flags) == want, (pred.flags, pred.raw_predicted)
    assert 0.0 <= pred.predicted <= 1.0
    assert pred.flag_texts == [FLAGS[f] for f in pred.flags]
    assert list(pred.flags) == [f for f in FLAGS if f in pred.flags]  # in FLAGS' order


def test_every_flag_is_triggered_by_some_case() -> None:
    seen = set().union(*(set(_predict(n).flags) for n in CASES))
    assert seen == set(FLAGS)


def test_clipped_keeps_the_raw_value() -> None:
    hi, lo = _predict("above_one"), _predict("below_zero")
    assert hi.raw_predicted > 1.0 and hi.predicted == 1.0
    assert lo.raw_predicted < 0.0 and lo.predicted == 0.0
    assert hi.to_dict()["raw_predicted"] == hi.raw_predicted


def test_no_eligible_window_uses_the_last_window() -> None:
    beta = [5.0, 4.0, 3.0, 2.5, 2.0, 1.0]
    pred = predict_final(beta, [0.6] * 6, k=3, n_val=N_VAL, num_classes=CLASSES)
    assert pred.t0 == 3 and pred.eligible_t0 == ()
    assert "no_eligible_window" in pred.flags
    assert pred.predicted == pytest.approx(0.6, abs=1e-6)


def test_chance_threshold_is_two_binomial_std() -> None:
    p = 1 / CLASSES
    want = p + 2 * math.sqrt(p * (1 - p) / N_VAL)
    assert chance_threshold(N_VAL, CLASSES) == pytest.approx(want, rel=1e-15)
    below = math.floor(want * N_VAL) / N_VAL  # the best accuracy at or under the threshold
    above = below + 1 / N_VAL
    acc = np.array([p, p, p, p, 0.0])
    for best, flagged in ((below, True), (above, False)):
        acc[-1] = best
        pred = predict_final(DOWN, acc, n_val=N_VAL, num_classes=CLASSES)
        assert ("at_chance" in pred.flags) is flagged, best


def test_flags_need_their_inputs() -> None:
    """Without n_val and num_classes the chance-level flag is not evaluated."""
    acc = np.array([0.20, 0.21, 0.20, 0.22, 0.21])
    assert "at_chance" not in predict_final(DOWN, acc).flags
    assert "at_chance" not in predict_final(DOWN, acc, n_val=N_VAL).flags
    assert "at_chance" in predict_final(DOWN, acc, n_val=N_VAL, num_classes=CLASSES).flags


# --- in the report --------------------------------------------------------------------


def _record(name: str, beta, acc, truth: float) -> CandidateRecord:
    return CandidateRecord(
        name=name,
        candidate={"kind": "callable"},
        key="k",
        status="ok",
        epochs_trained=len(beta),
        beta=list(beta),
        val_accuracy=list(acc),
        truth=truth,
        truth_epoch=20,
        logme=0.1,
    )


def _report() -> SelectionReport:
    recs = [
        _record("steady", DOWN, CASES["ordinary"][1], 0.8),
        _record("overshoot", DOWN, CASES["above_one"][1], 0.97),
        _record("stuck", DOWN, CASES["at_chance"][1], 0.25),
    ]
    results = [
        CandidateResult(
            r,
            score_record(
                r, epochs=5, k=5, t0=None, final_epoch=20, n_val=N_VAL, num_classes=CLASSES
            ),
            5,
        )
        for r in recs
    ]
    return SelectionReport.build(
        results, {"epochs": 5, "truth_epochs": 20}, {"name": "syn", "n_val": N_VAL}
    )


def test_report_shows_flags_as_footnotes_and_in_json() -> None:
    """Flagged predictions get a footnote marker in the table; report.json lists the codes."""
    rep = _report()
    table = rep.table()
    by = {c.name: c for c in rep.candidates}
    assert by["overshoot"].predicted == 1.0  # printed clipped, never 1.05
    for word in (FLAGS["clipped"], FLAGS["at_chance"]):
        assert word in table
    row = next(line for line in table.splitlines() if line.split()[1:2] == ["overshoot"])
    assert "1.000" in row and "[" in row
    doc = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    cands = {c["name"]: c for c in doc["candidates"]}
    assert cands["overshoot"]["flags"] == ["clipped"]
    assert cands["stuck"]["flags"] == ["below_best_seen", "at_chance"]
    assert cands["steady"]["flags"] == []
    assert cands["overshoot"]["prediction"]["raw_predicted"] > 1.0
    assert set(doc["flags"]) >= {"clipped", "at_chance"}
    assert doc["flags"]["clipped"] == FLAGS["clipped"]


def test_no_printed_prediction_lies_outside_zero_one() -> None:
    rep = _report()
    for line in rep.table().splitlines():
        for word in line.replace("±", " ").split():
            try:
                v = float(word)
            except ValueError:
                continue
            if "." in word and not word.startswith(("+", "-")):
                assert v <= 1.0 + 1e-12, line
