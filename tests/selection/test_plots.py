"""Plots a person can read: labels that do not overlap, accuracy axes within [0, 1], and no
empty plots for a run in which nothing finished (reports built from records, no training)."""

from __future__ import annotations

import numpy as np
import pytest

from ncap.selection import plots
from ncap.selection.record import CandidateRecord
from ncap.selection.report import CandidateResult, SelectionReport
from ncap.selection.scoring import score_record

EPOCHS, K = 6, 4
PNG = b"\x89PNG\r\n\x1a\n"


def _record(name, i, n):
    rng = np.random.default_rng(i)
    top = 0.25 + 0.7 * i / max(1, n - 1)
    acc = list(np.clip(np.linspace(0.2, top, 8) + rng.normal(0, 0.01, 8), 0, 1))
    # a steep, noisy line: its band and h(0) +- std run past 1 for the best candidates
    beta = list(np.linspace(0.3, 0.05, 8) + rng.normal(0, 0.02, 8))
    return CandidateRecord(
        name=name,
        candidate={"kind": "callable", "source": name},
        key="k",
        status="ok",
        epochs_trained=8,
        beta=beta,
        val_accuracy=acc,
        logme=float(rng.normal()),
        truth=float(np.clip(top + rng.normal(0, 0.03), 0, 1)),
        truth_epoch=8,
    )


def _report(records):
    results = [
        CandidateResult(r, score_record(r, epochs=EPOCHS, k=K, t0=None, final_epoch=8), EPOCHS)
        for r in records
    ]
    return SelectionReport.build(results, {"epochs": EPOCHS, "truth_epochs": 8}, {"name": "syn"})


@pytest.fixture(scope="module")
def crowded():
    """Twelve candidates with long names and close scores (the case that overlapped)."""
    n = 12
    names = [f"candidate-with-a-long-name-{i:02d}" for i in range(n)]
    return _report([_record(name, i, n) for i, name in enumerate(names)])


def _overlaps(fig, texts):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in texts if t.get_text()]
    return [
        (a, b)
        for i, a in enumerate(boxes)
        for b in boxes[i + 1 :]
        if a.overlaps(b) and a.width > 0 and b.width > 0
    ]


def test_predicted_vs_true_labels_every_candidate_once_without_overlap(crowded):
    import matplotlib.pyplot as plt

    fig = plots.predicted_vs_true_figure(crowded)
    try:
        first, *others = fig.axes
        labels = [t.get_text() for t in first.get_yticklabels()]
        by_truth = sorted(crowded.candidates, key=lambda c: c.truth)
        assert labels == [c.name for c in by_truth]  # one row each, best truth on top
        assert not first.texts and not any(ax.texts for ax in others)  # no labels over data
        assert not _overlaps(fig, first.get_yticklabels())
        for ax in others:  # labelled once, on the left
            assert not any(t.get_visible() and t.get_text() for t in ax.get_yticklabels())
        titles = [ax.get_title() for ax in fig.axes]
        assert all("Spearman rho" in t for t in titles)
        assert not _overlaps(fig, [ax.title for ax in fig.axes])
        for ax, m in zip(fig.axes, crowded.methods, strict=True):
            if m != "logme":
                lo, hi = ax.get_xlim()
                assert 0.0 <= lo < hi <= 1.0, m
    finally:
        plt.close(fig)


def test_accuracy_axes_stay_within_0_and_1(crowded):
    import matplotlib.pyplot as plt

    best = crowded.candidates[0].scores.prediction
    assert best.predicted + best.std > 1.0  # the case being tested: a band beyond 1
    for make in (plots.accuracy_vs_beta_figure, plots.learning_curves_figure):
        fig = make(crowded)
        try:
            for ax in fig.axes:
                if ax.get_visible() and ax.has_data():
                    lo, hi = ax.get_ylim()
                    assert 0.0 <= lo < hi <= 1.0, (make.__name__, ax.get_title())
        finally:
            plt.close(fig)


def test_legends_are_outside_the_data(crowded):
    import matplotlib.pyplot as plt

    for make in (plots.learning_curves_figure, plots.beta_curves_figure):
        fig = make(crowded)
        try:
            fig.canvas.draw()
            renderer = fig.canvas.get_renderer()
            (ax,) = fig.axes
            legend = ax.get_legend().get_window_extent(renderer)
            assert not legend.overlaps(ax.get_window_extent(renderer)), make.__name__
        finally:
            plt.close(fig)


def test_write_plots_writes_every_png(crowded, tmp_path):
    paths = plots.write_plots(crowded, str(tmp_path / "plots"))
    names = sorted(p.rsplit("/", 1)[-1] for p in paths)
    assert names == [
        "accuracy_vs_beta.png",
        "beta.png",
        "learning_curves.png",
        "predicted_vs_true.png",
    ]
    for p in paths:
        data = open(p, "rb").read()
        assert data.startswith(PNG) and len(data) > 5000


def test_no_plots_when_every_candidate_failed(tmp_path):
    dead = [
        CandidateRecord.failed(f"dead{i}", {"kind": "callable", "source": "x"}, "boom")
        for i in range(2)
    ]
    report = _report(dead)
    assert plots.write_plots(report, str(tmp_path / "plots")) == []
    assert not (tmp_path / "plots").exists()


def test_no_truth_no_predicted_vs_true(tmp_path):
    recs = [_record("a", 0, 2), _record("b", 1, 2)]
    no_truth = [CandidateRecord(**{**r.to_dict(), "truth": None, "error": None}) for r in recs]
    paths = plots.write_plots(_report(no_truth), str(tmp_path))
    assert sorted(p.rsplit("/", 1)[-1] for p in paths) == [
        "accuracy_vs_beta.png",
        "beta.png",
        "learning_curves.png",
    ]
