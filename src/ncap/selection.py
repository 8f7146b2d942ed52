"""``ncap.select``: rank candidate backbones by predicted fine-tuned accuracy (SPEC section 6).

For each candidate: attach ncap's frozen probe, fine-tune the backbone for
``epochs`` epochs while recording the training beta_eff and the validation
accuracy, and predict the final accuracy with :func:`ncap.predict_final`.
The baselines (last seen, best seen, learning-curve extrapolation, LogME)
score the same observations. In evaluation mode (``truth_epochs``) training
goes on to that epoch and the true test accuracy judges every method's ranking.
"""

from __future__ import annotations

import math
import numbers
import os
import time
from collections.abc import Sequence
from typing import Any

from .candidates import CandidateSpec, parse_candidates
from .data import Dataset, resolve_data
from .finetune import TrainSettings, data_fingerprint
from .progress import Progress
from .report import CandidateResult, SelectionReport
from .runner import RunStore, run_dask, run_in_process, write_json
from .scoring import score_record

#: Settings of the built-in example (used when ``data`` is the example and the
#: argument is not given): 10 observed epochs of 50, as the paper's protocol
#: (k = 5 epochs from a t0 chosen by BIC, T = 50), batch 32 for 150 training images.
EXAMPLE_SETTINGS = {"epochs": 10, "truth_epochs": 50, "batch_size": 32}
#: The paper's final epoch, where curve extrapolation reads off when no truth epoch is set.
DEFAULT_FINAL_EPOCH = 50


def _int(value: Any, name: str, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    return int(value)


def _is_example(data: Any) -> bool:
    return data is None or (isinstance(data, str) and data == "example")


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
    hidden: Sequence[int] = (256, 128, 64),
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
            :mod:`ncap.candidates`), or a mapping name -> candidate. ``None``:
            the built-in example pool.
        data: an ``.npz`` path, an image directory, a dict of arrays, an
            :class:`ncap.data.Dataset`, or ``None`` for the built-in example
            (digits 5-9; then ``epochs``, ``truth_epochs`` and ``batch_size``
            default to :data:`EXAMPLE_SETTINGS`).
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
        A :class:`ncap.report.SelectionReport`; ``print(report)`` shows the table.

    Raises:
        ValueError / TypeError: bad arguments, unreadable data, unknown candidates.
    """
    t_start = time.perf_counter()
    example = _is_example(data)
    if candidates is None and not example:
        raise ValueError(
            "candidates: name the backbones to compare for your data (the built-in "
            "pool only fits the built-in example)"
        )
    defaults = EXAMPLE_SETTINGS if example else {"epochs": 5, "truth_epochs": None,
                                                  "batch_size": 64}
    epochs = _int(defaults["epochs"] if epochs is None else epochs, "epochs", 2)
    if truth_epochs is None:
        truth_epochs = defaults["truth_epochs"]
    if truth_epochs is not None:
        truth_epochs = _int(truth_epochs, "truth_epochs", epochs)
    batch_size = _int(defaults["batch_size"] if batch_size is None else batch_size,
                      "batch_size", 1)
    k = _int(k, "k", 2)
    if k > epochs:
        raise ValueError(f"k={k} needs at least {k} observed epochs, got epochs={epochs}; "
                         "observe more epochs or pass a smaller k")
    if t0 is not None:
        t0 = _int(t0, "t0", 0)
        if t0 + k > epochs:
            raise ValueError(f"t0={t0} with k={k} runs past the {epochs} observed epochs")
    if final_epoch is None:
        final_epoch = truth_epochs or DEFAULT_FINAL_EPOCH
    final_epoch = _int(final_epoch, "final_epoch", 1)
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) \
            or not math.isfinite(learning_rate) or learning_rate <= 0:
        raise ValueError(f"learning_rate must be a positive number, got {learning_rate!r}")
    seed = _int(seed, "seed", 0)
    hidden = tuple(_int(h, "hidden[i]", 1) for h in hidden)
    if len(hidden) < 3:
        raise ValueError(f"hidden: the probe needs at least three hidden layers "
                         f"(beta_eff is 0 with fewer), got {hidden}")
    if not 0 <= dropout < 1:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    workers = _int(workers, "workers", 1)
    if threads is not None:
        threads = _int(threads, "threads", 1)
    if scheduler is not None and not isinstance(scheduler, str):
        raise TypeError(f"scheduler must be an address string, got {type(scheduler).__name__}")
    if resume and out is None:
        raise ValueError("resume=True needs out, the run directory to resume")

    dataset: Dataset = resolve_data(data)
    if truth_epochs is not None and not dataset.has_test:
        raise ValueError("truth_epochs needs test data (x_test, y_test) for the true accuracy")
    specs = parse_candidates(candidates, weights=weights, preprocess=preprocess)
    settings = TrainSettings(epochs, truth_epochs, batch_size, float(learning_rate), seed,
                             hidden, float(dropout), threads=threads or 0)
    fp = data_fingerprint(dataset)
    keys = {s.name: settings.key(s, fp) for s in specs}

    store = RunStore(out) if out is not None else None
    run_settings = {
        "epochs": epochs, "truth_epochs": truth_epochs, "final_epoch": final_epoch, "k": k,
        "t0": t0, "batch_size": batch_size, "learning_rate": float(learning_rate),
        "seed": seed, "hidden": list(hidden), "dropout": float(dropout),
        "optimizer": "adam", "workers": workers, "scheduler": scheduler,
        "example": example, "data_fingerprint": fp,
    }
    records: dict[str, dict[str, Any]] = {}
    reused: list[str] = []
    if store is not None:
        if resume:
            for s in specs:
                rec = store.load(s.name)
                if rec and rec.get("status") == "ok" and rec.get("key") == keys[s.name]:
                    records[s.name] = rec
                    reused.append(s.name)
        else:
            store.clear()
        write_json(os.path.join(store.out, "run.json"), {
            "settings": run_settings, "data": dataset.summary(),
            "candidates": {s.name: {**s.describe(), "key": keys[s.name]} for s in specs},
        })

    jobs = [(s, keys[s.name]) for s in specs if s.name not in records]
    overall = Progress(len(specs), "candidates", enabled=progress, unit="candidate")
    if reused:
        overall.update(len(reused), f"resumed {len(reused)} finished")

    def on_done(rec: dict[str, Any]) -> None:
        if store is not None:
            store.save(rec)
        records[rec["name"]] = rec
        if rec.get("status") == "ok":
            acc = [v for v in rec.get("val_accuracy") or [] if v is not None]
            note = f"{rec['name']} done in {rec.get('timing', {}).get('total_s', 0):.1f} s"
            if acc:
                note += f", val acc {acc[-1]:.3f} at epoch {len(rec['val_accuracy'])}"
        else:
            note = f"{rec['name']} FAILED: {rec['error']['message'][:120]}"
        overall.update(1, note)

    try:
        if jobs:
            if scheduler is None and workers == 1:
                run_in_process(jobs, dataset, settings, on_done, progress=progress)
            else:
                run_dask(jobs, dataset, settings, on_done, workers=workers,
                         scheduler=scheduler)
    finally:
        overall.close()

    results = [
        CandidateResult(records[s.name],
                        score_record(records[s.name], epochs=epochs, k=k, t0=t0,
                                     final_epoch=final_epoch), epochs)
        for s in specs
    ]
    run_settings["resumed"] = reused
    report = SelectionReport.build(results, run_settings, dataset.summary(),
                                   out=None if store is None else store.out)
    if reused:
        report.notes.append(f"resumed: {len(reused)} finished candidate(s) reused from the run "
                            f"directory: {', '.join(reused)}")
    if store is not None:
        files = [os.path.join(store.out, "report.json")]
        if plots:
            from .plots import write_plots

            try:
                files += write_plots(report, os.path.join(store.out, "plots"))
            except Exception as err:  # a plotting problem must not lose the report
                report.notes.append(f"plots failed: {type(err).__name__}: {err}")
        report.files = [os.path.relpath(f, store.out) for f in files]
        report.elapsed_s = time.perf_counter() - t_start
        write_json(files[0], report.to_dict())
    report.elapsed_s = time.perf_counter() - t_start
    return report


__all__ = ["select", "SelectionReport", "CandidateSpec", "EXAMPLE_SETTINGS"]
