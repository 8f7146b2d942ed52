"""The report explains itself: 1-based epochs, report.csv, the summary, the weights line,
and every report.json field documented in docs/REPORT.md (built from records, no training)."""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from ncap.selection.dataset import Dataset
from ncap.selection.record import CandidateRecord
from ncap.selection.report import CandidateResult, SelectionReport
from ncap.selection.scoring import score_record
from ncap.selection.settings import RunSettings

REPORT_MD = Path(__file__).resolve().parents[2] / "docs" / "REPORT.md"
EPOCHS, K = 6, 4


def _record(name, i, *, kind="callable", weights=None, adaptations=()):
    rng = np.random.default_rng(i)
    acc = list(np.clip(np.linspace(0.2, 0.3 + 0.1 * i, 8) + rng.normal(0, 0.01, 8), 0, 1))
    beta = list(np.linspace(2.0, 0.5, 8) + rng.normal(0, 0.05, 8))
    candidate = {"kind": kind, "source": name}
    if kind == "application":
        candidate.update(weights=weights, preprocess=True)
    return CandidateRecord(
        name=name,
        candidate=candidate,
        key="k",
        status="ok",
        epochs_trained=8,
        beta=beta,
        val_accuracy=acc,
        val_loss=[1.0] * 8,
        train_accuracy=acc,
        train_loss=[1.0] * 8,
        logme=float(i),
        feature_dim=16,
        backbone_params=100,
        adaptations=list(adaptations),
        truth=0.5 + 0.08 * i,
        truth_epoch=8,
        timing={"total_s": 1.0},
    )


def _report(records, **settings_kw):
    settings = RunSettings.from_arguments(
        data="user", epochs=EPOCHS, truth_epochs=8, k=K, **settings_kw
    )
    results = [
        CandidateResult(
            r,
            score_record(r, epochs=EPOCHS, k=K, t0=settings.t0, final_epoch=8),
            EPOCHS,
        )
        for r in records
    ]
    rng = np.random.default_rng(0)
    data = Dataset(
        rng.uniform(0, 1, (20, 8, 8, 1)),
        np.arange(20) % 2,
        rng.uniform(0, 1, (10, 8, 8, 1)),
        np.arange(10) % 2,
        name="synthetic",
    )
    return SelectionReport.build(
        results, {**settings.to_dict(), "resumed": []}, data.summary(), out="/runs/x"
    )


@pytest.fixture
def report():
    recs = [_record(f"m{i}", i) for i in range(4)]
    recs.append(
        _record(
            "MobileNetV2",
            4,
            kind="application",
            adaptations=["images resized 8x8 -> 32x32 (bilinear)"],
        )
    )
    recs.append(CandidateRecord.failed("dead", {"kind": "callable", "source": "x"}, "boom"))
    return _report(recs)


def test_every_epoch_a_user_reads_is_1_based(report):
    doc = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    for c, res in zip(doc["candidates"], report.candidates, strict=True):
        pred = res.scores.prediction
        if pred is None:
            assert c["t0"] is None
            continue
        assert c["t0"] == pred.t0 + 1 == c["prediction"]["t0"]
        assert [t for t, _ in c["prediction"]["bic_by_t0"]] == [t + 1 for t, _ in pred.bic_by_t0]
        assert 1 <= c["t0"] <= EPOCHS - K + 1
    # the window fixed by hand: select(t0=) counts like predict_final, report.json from 1
    fixed = _report([_record("a", 1), _record("b", 2)], t0=1)
    fdoc = fixed.to_dict()
    assert fdoc["settings"]["t0"] == 2
    assert {c["t0"] for c in fdoc["candidates"]} == {2}


def test_report_csv_is_the_ranking_table(report):
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert [r["candidate"] for r in rows] == [c.name for c in report.candidates]
    ranked = [r for r in rows if r["rank"]]
    assert [int(r["rank"]) for r in ranked] == list(range(1, len(ranked) + 1))
    preds = [float(r["predicted"]) for r in ranked]
    assert preds == sorted(preds, reverse=True)
    first = report.candidates[0]
    assert float(rows[0]["predicted"]) == pytest.approx(first.predicted)
    assert float(rows[0]["logme"]) == pytest.approx(first.scores.values["logme"])
    assert int(rows[0]["t0"]) == first.t0_epoch
    dead = rows[-1]
    assert dead["candidate"] == "dead" and dead["status"] == "failed"
    assert dead["predicted"] == "" and "boom" in dead["error"]
    assert int(rows[0]["logme_rank"]) == report.ranking("logme").index(first.name) + 1


def test_summary_has_only_the_ranking_and_the_picks(report):
    text = report.summary()
    lines = text.splitlines()
    assert lines[0].startswith(f"best: {report.best} (ncap predicts")
    assert lines[1].startswith("ranking: 1. ")
    assert lines[1].count(". ") == sum(math.isfinite(c.predicted) for c in report.candidates)
    picks = [ln for ln in lines if ln.startswith("picks: ")]
    assert len(picks) == 1 and f"LogME {report.ranking('logme')[0]}" in picks[0]
    assert "failed: dead" in lines
    assert "spearman" not in text and "----" not in text  # no table


def test_table_says_random_initialisation_and_lists_adaptations(report):
    table = report.table()
    assert "weights of keras.applications candidates: random initialisation (MobileNetV2)" in table
    assert "--weights imagenet" in table
    assert "MobileNetV2: images resized 8x8 -> 32x32 (bilinear)" in table
    assert "FAILED dead" in table and "boom" in table
    assert "report.json (fields: docs/REPORT.md)" in table
    imagenet = _report([_record("VGG16", 1, kind="application", weights="imagenet")])
    assert "weights of keras.applications candidates: imagenet (VGG16)" in imagenet.table()
    assert "random" not in imagenet.table()


# Maps whose keys are names (of methods, flags), not fields: their values' keys are fields.
_NAME_KEYED = {
    "methods",
    "flags",
    "baselines",
    "method_errors",
    "predictions",
    "params",
    "bic_by_family",
}


def _fields(obj, key=None):
    """Every field name of a JSON document (keys of name-keyed maps excluded)."""
    out = set()
    if isinstance(obj, dict):
        for k, v in obj.items():
            if key not in _NAME_KEYED:
                out.add(k)
            out |= _fields(v, None if key in _NAME_KEYED else k)
    elif isinstance(obj, list):
        for v in obj:
            out |= _fields(v, key)
    return out


def test_every_report_json_field_is_documented(report):
    """docs/REPORT.md names every field of report.json (as `name`)."""
    documented = set(re.findall(r"`([A-Za-z0-9_]+)`", REPORT_MD.read_text()))
    missing = sorted(_fields(report.to_dict()) - documented)
    assert not missing, f"fields of report.json missing from docs/REPORT.md: {missing}"
