"""``ncap.select``: rank candidate backbones by predicted fine-tuned accuracy (SPEC section 6).

For each candidate: attach ncap's frozen probe, fine-tune the backbone for
``epochs`` epochs while recording the training beta_eff and the validation
accuracy, and predict the final accuracy with :func:`ncap.predict_final`.
The baselines (last seen, best seen, learning-curve extrapolation, LogME)
score the same observations. In evaluation mode (``truth_epochs``) training
goes on to that epoch and the true test accuracy judges every method's ranking.

A run is four steps: settings (:mod:`.settings`), :func:`plan` (data,
candidates, record keys, what ``resume`` can reuse), :func:`execute` (train
what is left, in process or on Dask, saving each record as it finishes) and
:func:`build_report` (score, rank, write report.json and plots).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .candidates import CandidateSpec, parse_candidates
from .data import resolve_data
from .dataset import Dataset
from .finetune import TrainSettings, data_fingerprint
from .progress import Progress
from .record import CandidateRecord
from .report import CandidateResult, SelectionReport
from .runner import run_dask, run_in_process
from .scoring import score_record
from .settings import DEFAULT_HIDDEN, RunSettings, check_out
from .store import RunStore, write_json


@dataclass
class Plan:
    """What a run will do: its data, candidates and settings, and the records it reuses."""

    settings: RunSettings
    train: TrainSettings
    dataset: Dataset
    specs: list[CandidateSpec]
    keys: dict[str, str]
    store: RunStore | None
    records: dict[str, CandidateRecord] = field(default_factory=dict)
    reused: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def jobs(self) -> list[tuple[CandidateSpec, str]]:
        return [(s, self.keys[s.name]) for s in self.specs if s.name not in self.records]

    def run_info(self) -> dict[str, Any]:
        """The settings as report.json and run.json record them."""
        return {**self.settings.to_dict(), "data_fingerprint": data_fingerprint(self.dataset)}


def plan(
    candidates: Any,
    data: Any,
    settings: RunSettings,
    *,
    out: str | None,
    resume: bool,
    weights: Any = None,
    preprocess: bool = True,
) -> Plan:
    """Resolve data and candidates, compute record keys, and find what ``resume`` reuses."""
    if candidates is None and not settings.example:
        raise ValueError(
            "candidates: name the backbones to compare for your data (the built-in "
            "pool only fits the built-in example)"
        )
    dataset = resolve_data(data)
    if settings.truth_epochs is not None and not dataset.has_test:
        raise ValueError("truth_epochs needs test data (x_test, y_test) for the true accuracy")
    specs = parse_candidates(candidates, weights=weights, preprocess=preprocess)
    train = settings.train_settings()
    fp = data_fingerprint(dataset)
    keys = {s.name: train.key(s, fp) for s in specs}
    store = RunStore(out) if out is not None else None
    p = Plan(settings, train, dataset, specs, keys, store)
    if store is not None and resume:
        for s in specs:
            rec, problem = store.load(s.name)
            if problem is not None:
                p.notes.append(
                    f"resume: {s.name}'s stored record was not reused ({problem}); it runs again"
                )
            elif rec is not None and rec.ok and rec.key == keys[s.name]:
                p.records[s.name] = rec
                p.reused.append(s.name)
    return p


def _done_note(rec: CandidateRecord) -> str:
    if not rec.ok:
        return f"{rec.name} FAILED: {rec.error.message[:120] if rec.error else '?'}"
    note = f"{rec.name} done in {rec.timing.get('total_s', 0.0):.1f} s"
    acc = [v for v in rec.val_accuracy if v is not None]
    if acc:
        note += f", val acc {acc[-1]:.3f} at epoch {len(rec.val_accuracy)}"
    return note


def execute(p: Plan, *, progress: bool = True) -> None:
    """Train every candidate not reused; each record is saved the moment it finishes."""
    if p.store is not None:
        if not p.reused:
            p.store.clear()
        write_json(
            os.path.join(p.store.out, "run.json"),
            {
                "settings": p.run_info(),
                "data": p.dataset.summary(),
                "candidates": {s.name: {**s.describe(), "key": p.keys[s.name]} for s in p.specs},
            },
        )
    overall = Progress(len(p.specs), "candidates", enabled=progress, unit="candidate")
    if p.reused:
        overall.update(len(p.reused), f"resumed {len(p.reused)} finished")

    def on_done(rec: CandidateRecord) -> None:
        if p.store is not None:
            p.store.save(rec)
        p.records[rec.name] = rec
        overall.update(1, _done_note(rec))

    s = p.settings
    try:
        if p.jobs:
            if s.scheduler is None and s.workers == 1:
                run_in_process(p.jobs, p.dataset, p.train, on_done, progress=progress)
            else:
                run_dask(
                    p.jobs, p.dataset, p.train, on_done, workers=s.workers, scheduler=s.scheduler
                )
    finally:
        overall.close()


def build_report(p: Plan, *, plots: bool = True, t_start: float | None = None) -> SelectionReport:
    """Score every candidate, rank, and write report.json (and plots) into the run directory."""
    t_start = time.perf_counter() if t_start is None else t_start
    s = p.settings
    results = [
        CandidateResult(
            p.records[c.name],
            score_record(
                p.records[c.name], epochs=s.epochs, k=s.k, t0=s.t0, final_epoch=s.final_epoch
            ),
            s.epochs,
        )
        for c in p.specs
    ]
    info = {**p.run_info(), "resumed": list(p.reused)}
    report = SelectionReport.build(
        results, info, p.dataset.summary(), out=None if p.store is None else p.store.out
    )
    report.notes.extend(p.notes)
    if p.reused:
        report.notes.append(
            f"resumed: {len(p.reused)} finished candidate(s) reused from the "
            f"run directory: {', '.join(p.reused)}"
        )
    if p.store is not None:
        files = [os.path.join(p.store.out, "report.json")]
        if plots:
            from .plots import write_plots

            try:
                files += write_plots(report, os.path.join(p.store.out, "plots"))
            except Exception as err:  # a plotting problem must not lose the report
                report.notes.append(f"plots failed: {type(err).__name__}: {err}")
        report.files = [os.path.relpath(f, p.store.out) for f in files]
        report.elapsed_s = time.perf_counter() - t_start
        write_json(files[0], report.to_dict())
    report.elapsed_s = time.perf_counter() - t_start
    return report


def select(
    candidates: Any = None,
    data: Any = None,
    *,
    epochs: int | None = None,
    truth_epochs: int | None = None,
    final_epoch: int | None = None,
    k: int = 5,
    t0: int | None = None,
    batch_size: int | None = None,
    learning_rate: float = 1e-3,
    seed: int = 0,
    hidden: Sequence[int] = DEFAULT_HIDDEN,
    dropout: float = 0.4,
    weights: Any = None,
    preprocess: bool = True,
    out: str | os.PathLike[str] | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    threads: int | None = None,
    resume: bool = False,
    plots: bool = True,
    progress: bool = True,
) -> SelectionReport:
    """Fine-tune each candidate briefly and rank them by predicted final accuracy.

    Args:
        candidates: keras.applications names, saved model paths, callables
            returning a backbone, ``"example:NAME"``, dicts (see
            :mod:`ncap.selection.candidates`), or a mapping name -> candidate. ``None``:
            the built-in example pool.
        data: an ``.npz`` path, an image directory, a dict of arrays, an
            :class:`ncap.selection.dataset.Dataset`, or ``None`` for the built-in example
            (digits 5-9; then ``epochs``, ``truth_epochs`` and ``batch_size``
            default to :data:`ncap.selection.example.SETTINGS`).
        epochs: epochs observed by every predictor (default 5).
        truth_epochs: evaluation mode: train on to this epoch and record the
            test accuracy as the truth (needs test data).
        final_epoch: the epoch curve extrapolation reads off (default
            ``truth_epochs``, else 50).
        k, t0: ncap's window (see :func:`ncap.predict_final`).
        batch_size, learning_rate, seed: fine-tuning (Adam); batch 64 and
            learning rate 1e-3 are the paper's.
        hidden, dropout: the probe (see :func:`ncap.attach_probe`).
        weights, preprocess: for keras.applications names (passed through).
        out: run directory for ``candidates/NAME.json`` (written as each
            finishes), ``report.json`` and ``plots/``. ``None`` writes nothing.
        workers: 1 runs in this process; more starts a Dask LocalCluster with
            that many worker processes.
        scheduler: address of an existing Dask scheduler (overrides ``workers``).
        threads: TensorFlow intra-op threads for training (default: cores / workers
            on a LocalCluster, TensorFlow's own choice otherwise). In this process
            it applies only before TensorFlow has started.
        resume: reuse the finished candidates in ``out`` (same candidate,
            data and training settings); failed ones run again.
        plots: write PNG plots into ``out/plots``.
        progress: progress output on stderr.

    Returns:
        A :class:`ncap.SelectionReport`; ``print(report)`` shows the table.

    Raises:
        ValueError / TypeError: bad arguments, unreadable data, unknown candidates.
    """
    t_start = time.perf_counter()
    settings = RunSettings.from_arguments(
        data=data,
        epochs=epochs,
        truth_epochs=truth_epochs,
        final_epoch=final_epoch,
        k=k,
        t0=t0,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        hidden=hidden,
        dropout=dropout,
        workers=workers,
        scheduler=scheduler,
        threads=threads,
    )
    p = plan(
        candidates,
        data,
        settings,
        out=check_out(out, resume),
        resume=resume,
        weights=weights,
        preprocess=preprocess,
    )
    execute(p, progress=progress)
    return build_report(p, plots=plots, t_start=t_start)


__all__ = ["Plan", "build_report", "execute", "plan", "select"]
