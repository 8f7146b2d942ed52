"""The result of ``ncap.select``: ranked candidates, every method's ranking and metrics.

:class:`SelectionReport` renders as a terminal table (``str(report)``) and as
``report.json`` (:meth:`SelectionReport.to_dict`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .record import CandidateRecord
from .scoring import METHOD_LABELS, METHODS, Scores

REPORT_VERSION = 1


def _num(v: Any) -> float | None:
    """JSON has no NaN: non-finite numbers become null."""
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


@dataclass
class CandidateResult:
    """One candidate: its training record, its scores, and convenience accessors."""

    record: CandidateRecord
    scores: Scores
    observed_epochs: int

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def ok(self) -> bool:
        return self.record.ok

    @property
    def error(self) -> str | None:
        err = self.record.error
        return None if err is None else err.message

    @property
    def predicted(self) -> float:
        """ncap's predicted final accuracy (NaN when it could not be computed)."""
        return self.scores.values["ncap"]

    @property
    def std(self) -> float:
        p = self.scores.prediction
        return math.nan if p is None else float(p.std)

    @property
    def t0(self) -> int | None:
        p = self.scores.prediction
        return None if p is None else int(p.t0)

    @property
    def truth(self) -> float | None:
        return self.record.truth

    def curve(self, key: str) -> np.ndarray:
        """A recorded per-epoch curve (all trained epochs) as floats, NaN for gaps."""
        return np.array(
            [np.nan if v is None else v for v in getattr(self.record, key)], dtype=np.float64
        )

    def to_dict(self, rank: int | None) -> dict[str, Any]:
        r = self.record.to_dict()
        pred = self.scores.prediction
        fit = self.scores.curve_fit
        return {
            "name": self.name,
            "rank": rank,
            "candidate": r.get("candidate"),
            "status": r.get("status"),
            "error": r.get("error"),
            "predicted": _num(self.predicted),
            "std": _num(self.std),
            "t0": self.t0,  # 0-based index of the window's first epoch, as predict_final
            "t0_epoch": None if self.t0 is None else self.t0 + 1,
            "prediction": None if pred is None else pred.to_dict(),
            "observed_epochs": self.observed_epochs,
            "beta": r.get("beta"),
            "val_accuracy": r.get("val_accuracy"),
            "val_loss": r.get("val_loss"),
            "train_accuracy": r.get("train_accuracy"),
            "train_loss": r.get("train_loss"),
            "baselines": {m: _num(self.scores.values[m]) for m in METHODS[1:]},
            "curve_fit": None if fit is None else fit.to_dict(),
            "method_errors": dict(self.scores.errors),
            "method_warnings": list(self.scores.warnings),
            "truth": _num(self.truth),
            "truth_epoch": r.get("truth_epoch"),
            "feature_dim": r.get("feature_dim"),
            "backbone_params": r.get("backbone_params"),
            "timing": r.get("timing"),
        }


def _order(scores: list[float]) -> list[int]:
    """Indices by descending score, NaN last, ties kept in input order."""
    idx = list(range(len(scores)))
    return sorted(
        idx,
        key=lambda i: (
            not math.isfinite(scores[i]),
            -scores[i] if math.isfinite(scores[i]) else 0.0,
        ),
    )


@dataclass
class SelectionReport:
    """Candidates ranked by ncap's predicted final accuracy, with every baseline beside it.

    Attributes:
        candidates: ranked by ncap's prediction (failed candidates last).
        metrics: per method, Spearman/Kendall/Pearson/top-1 regret against the
            true final test accuracy, or None (no truth, or too few candidates).
        settings: the run's settings; data: the dataset's summary.
        out: the run directory, or None when nothing was written.
    """

    candidates: list[CandidateResult]
    settings: dict[str, Any]
    data: dict[str, Any]
    metrics: dict[str, dict[str, float] | None] = field(default_factory=dict)
    metric_notes: dict[str, str] = field(default_factory=dict)
    out: str | None = None
    elapsed_s: float = math.nan
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        results: list[CandidateResult],
        settings: dict[str, Any],
        data: dict[str, Any],
        **kw: Any,
    ) -> SelectionReport:
        """Rank ``results`` by ncap and compute each method's metrics when truth is known."""
        from .metrics import ranking_metrics

        ranked = [results[i] for i in _order([c.predicted for c in results])]
        metrics: dict[str, dict[str, float] | None] = {}
        notes: dict[str, str] = {}
        truth = np.array([np.nan if c.truth is None else c.truth for c in ranked])
        for m in METHODS:
            if not np.isfinite(truth).any():
                metrics[m] = None
                continue
            scores = np.array([c.scores.values[m] for c in ranked])
            try:
                metrics[m] = ranking_metrics(scores, truth)
            except ValueError as err:
                metrics[m] = None
                notes[m] = str(err)
        return cls(ranked, settings, data, metrics, notes, **kw)

    @property
    def has_truth(self) -> bool:
        return any(c.truth is not None for c in self.candidates)

    @property
    def best(self) -> str | None:
        """The candidate ncap ranks first (None when no prediction succeeded)."""
        c = self.candidates[0] if self.candidates else None
        return c.name if c is not None and math.isfinite(c.predicted) else None

    def ranking(self, method: str = "ncap") -> list[str]:
        """Candidate names best first by ``method`` (one of :data:`ncap.scoring.METHODS`)."""
        if method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
        scores = [c.scores.values[method] for c in self.candidates]
        return [self.candidates[i].name for i in _order(scores) if math.isfinite(scores[i])]

    def _ranks(self, method: str) -> dict[str, int]:
        return {n: i + 1 for i, n in enumerate(self.ranking(method))}

    def to_dict(self) -> dict[str, Any]:
        """The JSON document written as report.json."""
        from .. import __version__

        ncap_rank = self._ranks("ncap")
        return {
            "report_version": REPORT_VERSION,
            "ncap_version": __version__,
            "elapsed_s": _num(self.elapsed_s),
            "settings": self.settings,
            "data": self.data,
            "best": self.best,
            "ranking": self.ranking("ncap"),
            "methods": {
                m: {
                    "label": METHOD_LABELS[m],
                    "ranking": self.ranking(m),
                    "metrics": None
                    if self.metrics.get(m) is None
                    else {k: _num(v) for k, v in self.metrics[m].items()},  # type: ignore[union-attr]
                    "note": self.metric_notes.get(m),
                }
                for m in METHODS
            },
            "candidates": [c.to_dict(ncap_rank.get(c.name)) for c in self.candidates],
            "files": self.files,
            "notes": self.notes,
        }

    # --- terminal table ------------------------------------------------------

    def table(self) -> str:
        """The ranked table, the metrics (when the truth is known) and where the files are."""
        s = self.settings
        lines = []
        n_ok = sum(c.ok for c in self.candidates)
        head = (
            f"ncap select: {len(self.candidates)} candidates ({n_ok} ran), "
            f"data: {self.data.get('name', '?')}; observed epochs 1-{s.get('epochs')}"
        )
        if s.get("truth_epochs"):
            head += f"; truth: test accuracy after epoch {s['truth_epochs']}"
        lines.append(head)
        ranks = {m: self._ranks(m) for m in METHODS[1:]}
        name_w = max([9] + [len(c.name) for c in self.candidates])
        cols = [f"{'rank':>4}", f"{'candidate':<{name_w}}", f"{'predicted':>15}", f"{'t0':>3}"]
        cols += [f"{METHOD_LABELS[m]:>14}" for m in METHODS[1:]]
        if self.has_truth:
            cols.append(f"{'true':>6}")
        lines.append("  ".join(cols))
        lines.append("-" * len(lines[-1]))
        failed = []
        for i, c in enumerate(self.candidates):
            if not c.ok:
                failed.append(c)
                continue
            pred = f"{c.predicted:.3f} ± {c.std:.3f}" if math.isfinite(c.predicted) else "n/a"
            row = [
                f"{i + 1:>4}" if math.isfinite(c.predicted) else f"{'-':>4}",
                f"{c.name:<{name_w}}",
                f"{pred:>15}",
                f"{'' if c.t0 is None else c.t0 + 1:>3}",
            ]
            for m in METHODS[1:]:
                v = c.scores.values[m]
                cell = f"{v:.3f} ({ranks[m][c.name]})" if math.isfinite(v) else "n/a"
                row.append(f"{cell:>14}")
            if self.has_truth:
                row.append(f"{c.truth:>6.3f}" if c.truth is not None else f"{'n/a':>6}")
            lines.append("  ".join(row))
        lines.append(
            "(predicted: ncap's h(0) ± predictive std; t0: first epoch (1-based) of the "
            "fitted window; baselines: score (rank))"
        )
        for c in failed:
            lines.append(f"  FAILED {c.name}: {_short(c.error or 'unknown error')}")
        errs = [(c.name, m, e) for c in self.candidates if c.ok for m, e in c.scores.errors.items()]
        for name, m, e in errs:
            lines.append(f"  {name}: {METHOD_LABELS[m]} not available: {_short(e)}")
        if self.has_truth:
            lines.append("")
            lines.append(
                f"{'method':<16}  {'spearman':>8}  {'kendall':>8}  {'pearson':>8}  "
                f"{'top-1 regret':>12}  picks"
            )
            for m in METHODS:
                mt = self.metrics.get(m)
                rk = self.ranking(m)
                pick = rk[0] if rk else "-"
                if mt is None:
                    lines.append(
                        f"{METHOD_LABELS[m]:<16}  {self.metric_notes.get(m, 'not available')}"
                    )
                    continue
                lines.append(
                    f"{METHOD_LABELS[m]:<16}  {_f(mt['spearman']):>8}  {_f(mt['kendall']):>8}  "
                    f"{_f(mt['pearson']):>8}  {_f(mt['top1_regret']):>12}  {pick}"
                )
            lines.append(
                "(correlations of each method's scores with the true test accuracy; "
                "regret: best true accuracy minus that of the method's pick)"
            )
        for note in self.notes:
            lines.append(f"note: {note}")
        if self.out:
            lines.append("")
            lines.append(f"report: {self.out}/report.json")
            plots = [f for f in self.files if f.endswith(".png")]
            if plots:
                lines.append(f"plots:  {self.out}/plots/ ({len(plots)} PNG files)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _f(v: float) -> str:
    return "nan" if not math.isfinite(v) else f"{v:+.3f}" if v < 0 else f"{v:.3f}"


def _short(msg: str, n: int = 160) -> str:
    msg = " ".join(str(msg).split())
    return msg if len(msg) <= n else msg[: n - 3] + "..."
