"""The result of ``ncap.select``: ranked candidates, every method's ranking and metrics.

:class:`SelectionReport` renders as a terminal table (``str(report)``), a short
summary (:meth:`SelectionReport.summary`, ``ncap select --quiet``), ``report.json``
(:meth:`SelectionReport.to_dict`; every field is documented in docs/REPORT.md)
and ``report.csv`` (:meth:`SelectionReport.to_csv`, the ranking table).

Every epoch number a user reads (``t0``, ``truth_epoch``, the window, the
table's t0 column) is 1-based: epoch 1 is the first epoch of fine-tuning.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .predict import FLAGS
from .record import CandidateRecord
from .scoring import ACCURACY_METHODS, METHOD_LABELS, METHODS, PREDICTORS, Scores

#: Version of report.json's layout (2: t0 and the window's epochs are 1-based; adaptations).
REPORT_VERSION = 2


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
    def t0_epoch(self) -> int | None:
        """First epoch (1-based) of ncap's fitted window, or None without a prediction."""
        p = self.scores.prediction
        return None if p is None else int(p.t0) + 1

    @property
    def adaptations(self) -> list[str]:
        """How the data were fed to this backbone (resize, channels, pixels, preprocessing)."""
        return list(self.record.adaptations)

    @property
    def flags(self) -> tuple[str, ...]:
        """ncap's prediction flags (codes of :data:`ncap.selection.predict.FLAGS`)."""
        p = self.scores.prediction
        return () if p is None else tuple(p.flags)

    @property
    def truths(self) -> list[float]:
        """The true accuracy of each truth seed (one entry without ``truth_seeds``)."""
        if self.record.seed_truths:
            return list(self.record.seed_truths)
        return [] if self.record.truth is None else [self.record.truth]

    @property
    def truth(self) -> float | None:
        """The true test accuracy: the mean over the truth seeds."""
        t = self.truths
        return float(np.mean(t)) if t else None

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
            "t0": self.t0_epoch,  # 1-based, like --t0 and the table
            "prediction": None if pred is None else prediction_json(pred),
            "flags": list(self.flags),
            "predictions": {m: prediction_json(p) for m, p in self.scores.predictions.items()},
            "observed_epochs": self.observed_epochs,
            "adaptations": self.adaptations,
            "beta": r.get("beta"),
            "val_accuracy": r.get("val_accuracy"),
            "val_loss": r.get("val_loss"),
            "train_accuracy": r.get("train_accuracy"),
            "train_loss": r.get("train_loss"),
            "baselines": {m: _num(v) for m, v in self.scores.values.items() if m != "ncap"},
            "curve_fit": None if fit is None else fit.to_dict(),
            "method_errors": dict(self.scores.errors),
            "method_warnings": list(self.scores.warnings),
            "truth": _num(self.truth),  # the mean over the truth seeds
            "truths": [_num(t) for t in self.truths],  # per truth seed
            "truth_epoch": r.get("truth_epoch"),
            "tf_threads": r.get("tf_threads"),
            "feature_dim": r.get("feature_dim"),
            "backbone_params": r.get("backbone_params"),
            "timing": r.get("timing"),
        }


def prediction_json(pred: Any) -> dict[str, Any]:
    """A :class:`~ncap.selection.predict.Prediction` for report.json, its epochs 1-based.

    ``predict_final`` counts epochs from 0 (list indices); report.json counts them
    as a user does, from 1: ``t0``, the ``bic_by_t0`` pairs and ``eligible_t0``.
    """
    d = pred.to_dict()
    d["t0"] = int(d["t0"]) + 1
    d["bic_by_t0"] = [[int(t) + 1, b] for t, b in d.get("bic_by_t0", [])]
    if "eligible_t0" in d:
        d["eligible_t0"] = [int(t) + 1 for t in d["eligible_t0"]]
    return d


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
    methods: tuple[str, ...] = METHODS  # "ncap" first, then the others in report order
    #: per method that predicts an accuracy: MAE, bias (and coverage for ncap), or None
    accuracy: dict[str, dict[str, float] | None] = field(default_factory=dict)
    #: Spearman rho between the truth seeds (the seed-noise ceiling), or None
    ceiling: dict[str, Any] | None = None

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
        for m in kw.get("methods", METHODS):
            if not np.isfinite(truth).any():
                metrics[m] = None
                continue
            scores = np.array([c.scores.values[m] for c in ranked])
            try:
                metrics[m] = ranking_metrics(scores, truth)
            except ValueError as err:
                metrics[m] = None
                notes[m] = str(err)
        report = cls(ranked, settings, data, metrics, notes, **kw)
        report.accuracy = report._accuracy_metrics(truth)
        report.ceiling = report._seed_ceiling()
        return report

    def _accuracy_metrics(self, truth: np.ndarray) -> dict[str, dict[str, float] | None]:
        """MAE and bias of every method that predicts an accuracy; coverage for ncap's."""
        from .metrics import accuracy_metrics

        out: dict[str, dict[str, float] | None] = {}
        for m in (m for m in self.methods if m in ACCURACY_METHODS):
            scores = np.array([c.scores.values[m] for c in self.candidates])
            std = None
            if m in PREDICTORS:
                preds = [c.scores.predictions.get(m) for c in self.candidates]
                std = np.array([math.nan if p is None else p.std for p in preds])
            try:
                out[m] = accuracy_metrics(scores, truth, std)
            except ValueError:  # no candidate with both a prediction and a truth
                out[m] = None
        return out

    def _seed_ceiling(self) -> dict[str, Any] | None:
        """Spearman rho between the truth seeds' accuracies (None with fewer than 2 seeds)."""
        from .metrics import seed_ceiling

        rows = [c.truths for c in self.candidates if c.ok and len(c.truths) > 1]
        if len(rows) < 2 or len({len(r) for r in rows}) != 1:
            return None
        return seed_ceiling(np.array(rows).T)

    @property
    def _others(self) -> tuple[str, ...]:
        """The methods shown beside ncap's prediction (baselines, other predictors)."""
        return tuple(m for m in self.methods if m != "ncap")

    @property
    def has_truth(self) -> bool:
        return any(c.truth is not None for c in self.candidates)

    @property
    def best(self) -> str | None:
        """The candidate ncap ranks first (None when no prediction succeeded)."""
        c = self.candidates[0] if self.candidates else None
        return c.name if c is not None and math.isfinite(c.predicted) else None

    def ranking(self, method: str = "ncap") -> list[str]:
        """Candidate names best first by ``method`` (one of :attr:`methods`)."""
        if method not in self.methods:
            raise ValueError(f"method must be one of {list(self.methods)}, got {method!r}")
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
            "best": self.best,  # ncap's pick only; "picks" has every method's
            "picks": self.picks(),
            "picks_agree": self.picks_agree,
            "ranking": self.ranking("ncap"),
            "methods": {
                m: {
                    "label": METHOD_LABELS[m],
                    "ranking": self.ranking(m),
                    "metrics": None
                    if self.metrics.get(m) is None
                    else {k: _num(v) for k, v in self.metrics[m].items()},  # type: ignore[union-attr]
                    "note": self.metric_notes.get(m),
                    "accuracy": None
                    if self.accuracy.get(m) is None
                    else {k: _num(v) for k, v in self.accuracy[m].items()},  # type: ignore[union-attr]
                }
                for m in self.methods
            },
            "seed_ceiling": None
            if self.ceiling is None
            else {
                "spearman": _num(self.ceiling["spearman"]),
                "pairs": [[i, j, _num(r)] for i, j, r in self.ceiling["pairs"]],
            },
            "flags": dict(FLAGS),
            "candidates": [c.to_dict(ncap_rank.get(c.name)) for c in self.candidates],
            "files": self.files,
            "notes": self.notes,
        }

    # --- terminal table ------------------------------------------------------

    def _weights_line(self) -> str | None:
        """Say how keras.applications candidates were initialised (random is the default)."""
        apps = [
            c for c in self.candidates if (c.record.candidate or {}).get("kind") == "application"
        ]
        if not apps:
            return None
        by: dict[str, list[str]] = {}
        for c in apps:
            w = (c.record.candidate or {}).get("weights")
            by.setdefault("random initialisation" if w is None else str(w), []).append(c.name)
        parts = [f"{w} ({', '.join(names)})" for w, names in by.items()]
        line = "weights of keras.applications candidates: " + "; ".join(parts)
        if "random initialisation" in by:
            line += " - pass --weights imagenet to rank pre-trained backbones"
        return line

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
        weights = self._weights_line()
        if weights:
            lines.append(weights)
        lines.append(self._picks_line())
        marks = self._flag_marks()
        ranks = {m: self._ranks(m) for m in self._others}
        name_w = max([9] + [len(c.name) for c in self.candidates])
        pred_w = max([15] + [len(_prediction_cell(c, marks)) for c in self.candidates])
        cols = [
            f"{'rank':>4}",
            f"{'candidate':<{name_w}}",
            f"{'predicted':>{pred_w}}",
            f"{'t0':>3}",
        ]
        cols += [f"{METHOD_LABELS[m]:>14}" for m in self._others]
        if self.has_truth:
            cols.append(f"{'true':>6}")
        lines.append("  ".join(cols))
        lines.append("-" * len(lines[-1]))
        failed = []
        for i, c in enumerate(self.candidates):
            if not c.ok:
                failed.append(c)
                continue
            pred = _prediction_cell(c, marks)
            row = [
                f"{i + 1:>4}" if math.isfinite(c.predicted) else f"{'-':>4}",
                f"{c.name:<{name_w}}",
                f"{pred:>{pred_w}}",
                f"{'' if c.t0_epoch is None else c.t0_epoch:>3}",
            ]
            for m in self._others:
                v = c.scores.values[m]
                cell = f"{v:.3f} ({ranks[m][c.name]})" if math.isfinite(v) else "n/a"
                row.append(f"{cell:>14}")
            if self.has_truth:
                row.append(f"{c.truth:>6.3f}" if c.truth is not None else f"{'n/a':>6}")
            lines.append("  ".join(row))
        lines.append(
            "(predicted: ncap's h(0), the Bayesian ridge line acc = h(beta) at beta = 0, "
            "clipped to [0, 1]; ± its posterior predictive std given the fitted window; "
            "[n]: flags below; t0: first epoch (1-based) of the window; others: score (rank)"
            + ("; true: mean test accuracy over the truth seeds" if self.ceiling else "")
            + ")"
        )
        lines += self._flag_lines(marks)
        for c in failed:
            stage = c.record.error.stage if c.record.error else ""
            where = f" at {stage}" if stage else ""
            lines.append(f"  FAILED {c.name}{where}: {_short(c.error or 'unknown error', 400)}")
        if failed and self.out:
            lines.append(f"  (tracebacks: {self.out}/candidates/NAME.json, field error.traceback)")
        errs = [(c.name, m, e) for c in self.candidates if c.ok for m, e in c.scores.errors.items()]
        for name, m, e in errs:
            lines.append(f"  {name}: {METHOD_LABELS[m]} not available: {_short(e)}")
        adapted = [c for c in self.candidates if c.adaptations]
        if adapted:
            lines.append("inputs adapted:")
            for c in adapted:
                lines.append(f"  {c.name}: {'; '.join(c.adaptations)}")
        if self.has_truth:
            lines.append("")
            lines.append(
                f"{'method':<18}  {'spearman':>8}  {'kendall':>8}  {'pearson':>8}  "
                f"{'top-1 regret':>12}  {'MAE':>6}  {'bias':>6}  {'in 1sd':>6}  {'in 2sd':>6}"
                "  pick"
            )
            for m in self.methods:
                mt = self.metrics.get(m)
                rk = self.ranking(m)
                pick = rk[0] if rk else "-"
                if mt is None:
                    lines.append(
                        f"{METHOD_LABELS[m]:<18}  {self.metric_notes.get(m, 'not available')}"
                    )
                    continue
                acc = self.accuracy.get(m) or {}
                cells = [_f(acc.get(k, math.nan), "") for k in ("mae", "bias")]
                cells += [_f(acc.get(k, math.nan), "") for k in ("within_1std", "within_2std")]
                lines.append(
                    f"{METHOD_LABELS[m]:<18}  {_f(mt['spearman']):>8}  {_f(mt['kendall']):>8}  "
                    f"{_f(mt['pearson']):>8}  {_f(mt['top1_regret']):>12}  "
                    + "  ".join(f"{v:>6}" for v in cells)
                    + f"  {pick}"
                )
            lines.append(
                "(correlations of each method's scores with the true test accuracy; regret: "
                "best true accuracy minus that of the method's pick; MAE, bias: mean "
                "|predicted - true| and mean (predicted - true), for methods that predict an "
                "accuracy; in 1sd / in 2sd: fraction of true accuracies within 1 / 2 "
                "predictive std of ncap's prediction)"
            )
            if self.ceiling is not None:
                n = len(self.candidates[0].truths) if self.candidates else 0
                lines.append(
                    f"seed-noise ceiling: Spearman rho between the truths of the {n} truth "
                    f"seeds: {_f(self.ceiling['spearman'])} (per pair of seeds: "
                    + ", ".join(f"{_f(r)}" for *_, r in self.ceiling["pairs"])
                    + "); no ranking is reliable beyond it"
                )
        for note in self.notes:
            lines.append(f"note: {note}")
        lines += self._files_lines()
        return "\n".join(lines)

    def _files_lines(self) -> list[str]:
        if not self.out:
            return []
        lines = ["", f"report: {self.out}/report.json (fields: docs/REPORT.md)"]
        if "report.csv" in self.files:
            lines.append(f"table:  {self.out}/report.csv")
        plots = [f for f in self.files if f.endswith(".png")]
        if plots:
            lines.append(f"plots:  {self.out}/plots/ ({len(plots)} PNG files)")
        return lines

    def picks(self) -> dict[str, str | None]:
        """Each method's first-ranked candidate (None when the method scored none)."""
        return {m: (self.ranking(m) or [None])[0] for m in self.methods}

    @property
    def picks_agree(self) -> bool:
        """Every method that scored a candidate picks the same one."""
        return len({p for p in self.picks().values() if p is not None}) <= 1

    def _picks_line(self) -> str:
        picks = self.picks()
        names = {p for p in picks.values() if p is not None}
        verdict = (
            "all methods pick the same candidate"
            if len(names) <= 1
            else f"the methods disagree ({len(names)} different picks)"
        )
        each = "; ".join(f"{METHOD_LABELS[m]} {picks[m] or '-'}" for m in self.methods)
        return f"picks: {each} - {verdict}"

    def _flag_marks(self) -> dict[str, int]:
        """Footnote number of every flag raised in this report, in the order of FLAGS."""
        raised = {
            f for c in self.candidates for p in c.scores.predictions.values() for f in p.flags
        }
        return {f: i + 1 for i, f in enumerate(f for f in FLAGS if f in raised)}

    def _flag_lines(self, marks: dict[str, int]) -> list[str]:
        """One footnote per raised flag: its text and who carries it (per ncap predictor)."""
        lines = []
        for flag, n in marks.items():
            who = []
            for m in (m for m in self.methods if m in PREDICTORS):
                names = [
                    c.name
                    for c in self.candidates
                    if m in c.scores.predictions and flag in c.scores.predictions[m].flags
                ]
                if names:
                    who.append(f"{METHOD_LABELS[m]}: {', '.join(names)}")
            lines.append(f"  [{n}] {FLAGS[flag]} ({'; '.join(who)})")
        return lines

    def summary(self) -> str:
        """Only the ranking and each method's pick (``ncap select --quiet``)."""
        ranked = [c for c in self.candidates if c.ok and math.isfinite(c.predicted)]
        lines = []
        if ranked:
            best = ranked[0]
            lines.append(f"best: {best.name} (ncap predicts {best.predicted:.3f} ± {best.std:.3f})")
            lines.append(
                "ranking: "
                + ", ".join(f"{i + 1}. {c.name} {c.predicted:.3f}" for i, c in enumerate(ranked))
            )
        else:
            lines.append("best: none (no candidate got a prediction)")
        picks = self.picks()
        lines.append(
            "picks: " + "; ".join(f"{METHOD_LABELS[m]} {picks[m] or '-'}" for m in self.methods)
        )
        failed = [c.name for c in self.candidates if not c.ok]
        if failed:
            lines.append(f"failed: {', '.join(failed)}")
        if self.out:
            lines.append(f"report: {self.out}/report.json")
        return "\n".join(lines)

    # --- report.csv --------------------------------------------------------------

    def csv_rows(self) -> list[dict[str, Any]]:
        """The ranking table as rows (ncap's order; failed candidates last, with their error)."""
        ranks = {m: self._ranks(m) for m in self.methods}
        rows = []
        for c in self.candidates:
            row: dict[str, Any] = {
                "rank": ranks["ncap"].get(c.name),
                "candidate": c.name,
                "status": c.record.status,
                "predicted": _num(c.predicted),
                "std": _num(c.std),
                "t0": c.t0_epoch,
            }
            for m in self._others:
                row[m] = _num(c.scores.values[m])
                row[f"{m}_rank"] = ranks[m].get(c.name)
            row["truth"] = _num(c.truth)
            row["truth_epoch"] = c.record.truth_epoch
            row["error"] = c.error
            rows.append(row)
        return rows

    def to_csv(self) -> str:
        """report.csv: one row per candidate, empty cells where a value is missing."""
        rows = self.csv_rows()
        buf = io.StringIO()
        fields = list(rows[0]) if rows else ["rank", "candidate"]
        writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
        return buf.getvalue()

    def __str__(self) -> str:
        return self.table()


def _f(v: float, missing: str = "nan") -> str:
    return missing if not math.isfinite(v) else f"{v:+.3f}" if v < 0 else f"{v:.3f}"


def _prediction_cell(c: CandidateResult, marks: dict[str, int]) -> str:
    """``predicted ± std`` and the footnote numbers of its flags, e.g. ``0.912 ± 0.010 [1,3]``."""
    if not math.isfinite(c.predicted):
        return "n/a"
    cell = f"{c.predicted:.3f} ± {c.std:.3f}"
    notes = [str(marks[f]) for f in c.flags if f in marks]
    return f"{cell} [{','.join(notes)}]" if notes else cell


def _short(msg: str, n: int = 160) -> str:
    msg = " ".join(str(msg).split())
    return msg if len(msg) <= n else msg[: n - 3] + "..."
