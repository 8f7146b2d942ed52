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

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .candidates import CandidateSpec, check_weights, parse_candidates
from .data import resolve_data
from .dataset import Dataset
from .finetune import TrainSettings, data_fingerprint
from .header import run_header
from .progress import RunProgress
from .record import CandidateRecord
from .report import CandidateResult, SelectionReport
from .runner import RunInterrupted, Runner, open_runner, preflight
from .scoring import methods_for, score_record
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

    def interrupted(self) -> RunInterrupted:
        """The Ctrl-C error: how many candidates are stored in the run directory."""
        out = None if self.store is None else self.store.out
        return RunInterrupted(len(self.records) if out else 0, len(self.specs), out)

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
    weight_notes = check_weights(specs, dataset.input_shape)  # before any training
    train = settings.train_settings()
    fp = data_fingerprint(dataset)
    keys = {s.name: train.key(s, fp) for s in specs}
    store = RunStore(out) if out is not None else None
    p = Plan(settings, train, dataset, specs, keys, store)
    p.notes.extend(weight_notes)
    if store is not None and resume:
        for s in specs:
            rec, problem = store.load(s.name)
            if problem is not None:
                p.notes.append(
                    f"resume: {s.name}'s stored record was not reused ({problem}); it runs again"
                )
            elif (
                rec is not None
                and rec.ok
                and rec.key == keys[s.name]
                and rec.epochs_trained == train.train_epochs
            ):
                p.records[s.name] = rec
                p.reused.append(s.name)
    return p


def _done_note(rec: CandidateRecord) -> str:
    if not rec.ok:
        err = rec.error
        where = f" at {err.stage}" if err and err.stage else ""
        msg = " ".join(err.message.split()) if err else "?"
        return f"{rec.name} FAILED{where}: {msg if len(msg) <= 400 else msg[:397] + '...'}"
    note = f"{rec.name} done in {rec.timing.get('total_s', 0.0):.1f} s"
    acc = [v for v in rec.val_accuracy if v is not None]
    if acc:
        note += f", val acc {acc[-1]:.3f} at epoch {len(rec.val_accuracy)}"
    if rec.adaptations and rec.candidate.get("kind") != "application":  # not in the header
        note += f"; inputs adapted: {'; '.join(rec.adaptations)}"
    return note


def execute(p: Plan, *, progress: bool = True) -> None:
    """Train every candidate not reused; each record is saved the moment it finishes.

    Dask is reached (or started) first, so a wrong scheduler fails before anything
    is written; then the run directory is locked, marked and cleared of an earlier
    run's files (:meth:`RunStore.open`; :func:`select` releases it). Ctrl-C raises
    :class:`~ncap.selection.runner.RunInterrupted`, which says how many are saved.
    """
    with open_runner(p.settings) if p.jobs else _no_runner() as runner:
        if p.store is not None:
            p.store.open(fresh=not p.reused)
            write_json(
                os.path.join(p.store.out, "run.json"),
                {
                    "settings": p.run_info(),
                    "data": p.dataset.summary(),
                    "candidates": {
                        s.name: {**s.describe(), "key": p.keys[s.name]} for s in p.specs
                    },
                },
            )
        _train(p, runner, progress)


@contextlib.contextmanager
def _no_runner() -> Iterator[None]:
    yield None  # every candidate was reused: start no cluster


def _train(p: Plan, runner: Runner | None, progress: bool) -> None:
    overall = RunProgress(
        len(p.jobs),
        p.train.train_epochs,
        p.settings.epochs,
        n_total=len(p.specs),
        enabled=progress,
    )
    overall.header(run_header(p))

    def on_done(rec: CandidateRecord) -> None:
        if p.store is not None:
            p.store.save(rec)
        p.records[rec.name] = rec
        overall.finished(rec.name, _done_note(rec))

    def on_note(msg: str) -> None:
        p.notes.append(msg)
        overall.write(msg)

    try:
        if runner is not None:
            runner.run(p.jobs, p.dataset, p.train, on_done, on_note, overall.handle)
    except KeyboardInterrupt:
        raise p.interrupted() from None
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
                p.records[c.name],
                epochs=s.epochs,
                k=s.k,
                t0=s.t0,
                final_epoch=s.final_epoch,
                n_val=len(p.dataset.y_val),
                num_classes=p.dataset.num_classes,
                methods=methods_for(s.beta),
            ),
            s.epochs,
        )
        for c in p.specs
    ]
    info = {**p.run_info(), "resumed": list(p.reused)}
    report = SelectionReport.build(
        results,
        info,
        p.dataset.summary(),
        out=None if p.store is None else p.store.out,
        methods=methods_for(s.beta),
    )
    report.notes.extend(p.notes)
    # In this process TensorFlow keeps the thread count it started with (finetune.py).
    off = [r.name for r in p.records.values() if r.ok and r.tf_threads not in (None, s.threads)]
    if off:
        report.notes.append(
            f"threads: {', '.join(off)} trained with the TensorFlow thread count this process "
            f"had already set, not threads={s.threads}; their numbers may differ from a fresh "
            "run's (run ncap select in a new process)"
        )
    if p.reused:
        report.notes.append(
            f"resumed: {len(p.reused)} finished candidate(s) reused from the "
            f"run directory: {', '.join(p.reused)}"
        )
    if p.store is not None:
        files = [os.path.join(p.store.out, "report.json"), os.path.join(p.store.out, "report.csv")]
        with open(files[1], "w", newline="") as f:
            f.write(report.to_csv())
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
    candidate_timeout: float | None = None,
    retries: int = 0,
    beta: str = "step",
    truth_seeds: int = 1,
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
        scheduler: address of an existing Dask scheduler (overrides ``workers``);
            reached first, within 20 s, before anything is written.
        threads: TensorFlow threads per candidate (default 1, whatever the number
            of workers: the thread count changes the training, and the report must
            not depend on ``workers``). In this process it applies only before
            TensorFlow has started; each record says the count in use (``tf_threads``).
            TensorFlow op determinism is switched on where candidates train.
        candidate_timeout: seconds a candidate may run after it started; one still
            running then is stopped and reported as timed out, and the run goes on.
            Candidates then run in worker processes (a one-worker LocalCluster when
            ``workers=1``), since only a process can be stopped from outside.
        retries: on Dask, times a candidate whose worker died while it ran is run
            again (default 0: reported as failed). One only queued on that worker
            is always submitted again.
        beta: per-epoch beta protocol (SPEC section 6): ``"step"`` (default, free:
            the mean over each epoch's training steps), ``"epoch"`` (the paper's: a
            pass over the training set in inference mode after each epoch), or
            ``"both"`` (both recorded; the report shows both ncap predictors).
        truth_seeds: evaluation mode: fine-tune each candidate with seeds
            ``seed .. seed + truth_seeds - 1``; methods are judged against the mean
            truth and the report gives the Spearman rho between the seeds' truths
            (the seed-noise ceiling). Predictors read the ``seed`` run only.
        resume: reuse the finished candidates in ``out`` (same candidate,
            data and training settings); failed ones run again.
        plots: write PNG plots into ``out/plots``.
        progress: progress output on stderr.

    Returns:
        A :class:`ncap.SelectionReport`; ``print(report)`` shows the table.

    Raises:
        ValueError / TypeError: bad arguments, unreadable data, unknown candidates;
            an ``out`` that is not an ncap run directory, not writable, or in use
            by another run (:class:`~ncap.selection.store.RunDirError`); a
            ``scheduler`` that cannot be used (:class:`~ncap.selection.cluster.SchedulerError`).
        RunInterrupted: Ctrl-C (a ``KeyboardInterrupt``); the finished candidates are saved.
        UnguardedScriptError: worker processes requested at the top level of a script
            without ``if __name__ == "__main__":``.
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
        candidate_timeout=candidate_timeout,
        retries=retries,
        beta=beta,
        truth_seeds=truth_seeds,
    )
    preflight(settings)  # the __main__ guard and the scheduler, before any data is read
    p = plan(
        candidates,
        data,
        settings,
        out=check_out(out, resume),
        resume=resume,
        weights=weights,
        preprocess=preprocess,
    )
    try:
        execute(p, progress=progress)
        return build_report(p, plots=plots, t_start=t_start)
    except KeyboardInterrupt as err:  # e.g. while the cluster starts or the plots are drawn
        if isinstance(err, RunInterrupted):
            raise
        raise p.interrupted() from None
    finally:
        if p.store is not None:
            p.store.close()  # the lock is held from execute through the report


__all__ = ["Plan", "build_report", "execute", "plan", "select"]
