"""Fine-tune one candidate and record what every predictor reads (runs on a Dask worker).

:func:`finetune_candidate` builds the backbone, scores its untouched features
with LogME, attaches ncap's frozen probe, fine-tunes the backbone while the
:class:`ncap.keras.BetaEff` callback records the training beta_eff, and (in
evaluation mode) trains on to ``truth_epochs`` and measures the test accuracy.
It never raises: a failure comes back as a record with ``"error"`` set, so one
bad candidate cannot stop a selection run.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from .candidates import CandidateSpec
from .dataset import Dataset
from .record import RECORD_VERSION, CandidateRecord, finite_list
from .seeding import seeded


@dataclass(frozen=True)
class TrainSettings:
    """Everything that shapes a candidate's training run (and so its cached record)."""

    epochs: int
    truth_epochs: int | None
    batch_size: int
    learning_rate: float
    seed: int
    hidden: tuple[int, ...]
    dropout: float
    threads: int = 0  # TF intra-op threads in a worker; 0 leaves TensorFlow's default
    beta: str = "step"  # per-epoch beta protocol: "step", "epoch" or "both" (SPEC section 6)
    truth_seeds: int = 1  # evaluation mode: fine-tune with seeds seed .. seed + n - 1 for the truth

    @property
    def train_epochs(self) -> int:
        """Epochs actually trained: through the truth epoch in evaluation mode."""
        return max(self.epochs, self.truth_epochs or 0)

    def key(self, spec: CandidateSpec, data_fingerprint: str) -> str:
        """Identifies a finished record for ``resume``: same candidate, data and training."""
        d = asdict(self)
        d.pop("threads")  # does not change the result
        blob = json.dumps(
            [RECORD_VERSION, d, spec.describe(), data_fingerprint], sort_keys=True, default=str
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:20]


def data_fingerprint(data: Dataset) -> str:
    """A hash of the dataset's arrays (resume must not mix results from other data)."""
    h = hashlib.sha256()
    for a in (data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test):
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(str((a.shape, a.dtype.str)).encode())
        h.update(a.data)
    return h.hexdigest()[:20]


def _limit_threads(threads: int) -> int:
    """Set TensorFlow's thread pools; return the intra-op threads in use (0: its default).

    The thread count changes float sums and so the training, so it is a run
    setting, never derived from the worker count.
    """
    import tensorflow as tf

    if threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow already initialised in this process: keep its pools
            pass
    return int(tf.config.threading.get_intra_op_parallelism_threads())


def _deterministic_ops(on: bool) -> bool:
    """Switch TensorFlow op determinism on or off; return whether it was on.

    On while a candidate trains, so that a run repeats exactly with the same
    threads; put back afterwards, since it is process-wide and Keras turns
    XLA (``jit_compile``) off under it for whatever the process runs next.
    """
    from tensorflow.python.framework import config as tf_config  # Keras reads it there too

    was = bool(tf_config.is_op_determinism_enabled())
    if on:
        tf_config.enable_op_determinism()
    else:
        tf_config.disable_op_determinism()
    return was


def _batched(model: Any, x: np.ndarray, batch: int = 256) -> np.ndarray:
    """``model(x)`` in inference mode, eagerly and in batches.

    Eager calls, not ``predict``/``evaluate``: those trace a new tf.function per
    model, and a run over many candidates drowns in retracing warnings.
    """
    out = [np.asarray(model(x[i : i + batch], training=False)) for i in range(0, len(x), batch)]
    y = np.concatenate(out)
    return y.reshape(len(y), -1)


def failed_record(
    spec: CandidateSpec,
    err: BaseException | str,
    *,
    key: str = "",
    stage: str = "",
    timing: dict[str, float] | None = None,
) -> CandidateRecord:
    """The record of a candidate that could not be run to the end."""
    return CandidateRecord.failed(
        spec.name, spec.describe(), err, key=key, stage=stage, timing=timing
    )


def finetune_candidate(
    spec: CandidateSpec,
    data: Dataset,
    settings: TrainSettings,
    record_key: str = "",
    on_epoch: Callable[[int, dict[str, Any]], None] | None = None,
) -> CandidateRecord:
    """Run one candidate; return its record. Never raises.

    ``on_epoch(epoch, logs)`` is called after each epoch (in-process progress bars).
    """
    key = record_key
    stage = "setup"
    t_start = time.perf_counter()
    timing: dict[str, float] = {}
    was_deterministic = True  # nothing to put back unless it is switched on below
    private_seeds = ExitStack()  # Keras' own seed generator while this candidate runs
    try:
        tf_threads = _limit_threads(settings.threads)
        was_deterministic = _deterministic_ops(True)
        import keras

        import ncap
        from ncap.tf import BetaEff

        from .adapt import pixel_range
        from .candidates import build_adapted_backbone
        from .logme import logme

        stage = "build"
        keras.backend.clear_session()  # one candidate's graphs must not pile up on the next
        reseed = private_seeds.enter_context(seeded(settings.seed))
        t = time.perf_counter()
        backbone, adapted = build_adapted_backbone(
            spec, data.input_shape, pixel_range(data.x_train)
        )
        timing["build_s"] = time.perf_counter() - t

        stage = "logme"  # on the features before any fine-tuning (You et al. 2021)
        t = time.perf_counter()
        feats = _batched(backbone, data.x_train)
        logme_score: float | None
        logme_error = None
        try:
            logme_score = float(logme(feats, data.y_train))
        except (ValueError, ArithmeticError, np.linalg.LinAlgError) as err:
            logme_score, logme_error = None, f"{type(err).__name__}: {err}"
        timing["logme_s"] = time.perf_counter() - t

        stage = "probe"
        reseed()
        model = ncap.attach_probe(
            backbone,
            data.num_classes,
            hidden=settings.hidden,
            dropout=settings.dropout,
            seed=settings.seed,
        )
        model.compile(
            optimizer=keras.optimizers.Adam(settings.learning_rate),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )

        stage = "fine-tune"
        beta_cb = (
            BetaEff()
            if settings.beta == "step"
            else BetaEff(
                protocol=settings.beta,
                data=(data.x_train, data.y_train),
                batch_size=settings.batch_size,
                threads=settings.threads,  # the kernel's sums, like TensorFlow's, fixed
            )
        )
        callbacks: list[Any] = [beta_cb]
        if on_epoch is not None:
            callbacks.append(
                keras.callbacks.LambdaCallback(
                    on_epoch_end=lambda e, logs: on_epoch(e, dict(logs or {}))
                )
            )
        t = time.perf_counter()
        # One fit through the truth epoch; predictors read only the first `epochs`.
        hist = model.fit(
            data.x_train,
            data.y_train,
            batch_size=settings.batch_size,
            epochs=settings.train_epochs,
            validation_data=(data.x_val, data.y_val),
            callbacks=callbacks,
            shuffle=True,
            verbose=0,
        )
        timing["fit_s"] = time.perf_counter() - t
        if beta_cb.records_passes:  # the epoch protocol's passes, inside fit_s
            timing["epoch_pass_s"] = float(sum(beta_cb.pass_seconds))
        h = hist.history
        # record.beta: the run's protocol ("both": step); record.beta_epoch: "both"'s epoch one.
        primary = BetaEff.LOG_KEYS["epoch" if settings.beta == "epoch" else "step"]
        second = BetaEff.LOG_KEYS["epoch"] if settings.beta == "both" else None
        for name in (primary, second):
            if name is not None and name not in h:
                raise RuntimeError(f"the BetaEff callback wrote no {name!r} to the training logs")

        truth = None
        if settings.truth_epochs is not None and data.has_test:
            stage = "evaluate"
            probs = _batched(model, data.x_test)
            truth = float(np.mean(np.argmax(probs, axis=1) == data.y_test))
        timing["total_s"] = time.perf_counter() - t_start
        record = CandidateRecord(
            name=spec.name,
            candidate=spec.describe(),
            key=key,
            status="ok",
            epochs_trained=len(h[primary]),
            beta=finite_list(h[primary]),
            beta_epoch=finite_list(h[second]) if second else [],
            val_accuracy=finite_list(h["val_accuracy"]),
            val_loss=finite_list(h.get("val_loss", [])),
            train_accuracy=finite_list(h.get("accuracy", [])),
            train_loss=finite_list(h.get("loss", [])),
            logme=logme_score,
            logme_error=logme_error,
            feature_dim=int(feats.shape[1]),
            backbone_params=int(backbone.count_params()),
            adaptations=adapted.lines,
            truth=truth,
            truth_epoch=settings.truth_epochs if truth is not None else None,
            tf_threads=tf_threads,
            timing=timing,
        )
        if truth is None or settings.truth_seeds == 1:
            return record
        stage = "truth seeds"
        return _with_seed_truths(record, spec, data, settings)
    except (Exception, SystemExit) as err:  # one bad candidate must not end the run
        timing = {"total_s": time.perf_counter() - t_start}
        if isinstance(err, SystemExit):  # sys.exit() in the candidate's code
            return CandidateRecord.failed(
                spec.name,
                spec.describe(),
                f"SystemExit: the candidate called sys.exit({err.code!r}), which would have "
                "ended the run",
                key=key,
                stage=stage,
                tb="".join(traceback.format_exception(type(err), err, err.__traceback__)),
                timing=timing,
            )
        return failed_record(spec, err, key=key, stage=stage, timing=timing)
    finally:
        private_seeds.close()
        if not was_deterministic:
            _deterministic_ops(False)


def _with_seed_truths(
    record: CandidateRecord, spec: CandidateSpec, data: Dataset, settings: TrainSettings
) -> CandidateRecord:
    """``record`` with the truth of every truth seed: the same run again with seed + 1, ...

    Each seed is a whole run of :func:`finetune_candidate`, so its truth is what a
    run with that seed would report. It records the free step protocol only: the
    epoch protocol's pass changes nothing in training (tests/selection/
    test_determinism.py), and only the truth is kept. A seed that fails fails the
    candidate: a mean over fewer seeds would not compare.
    """
    t = time.perf_counter()
    truths = [record.truth]
    for i in range(1, settings.truth_seeds):
        seed = settings.seed + i
        other = finetune_candidate(
            spec, data, replace(settings, seed=seed, truth_seeds=1, beta="step")
        )
        if not other.ok or other.truth is None:
            why = other.error.message if other.error else "no truth was measured"
            raise RuntimeError(f"truth seed {seed} failed: {why}")
        truths.append(other.truth)
    timing = {**record.timing, "truth_seeds_s": time.perf_counter() - t}
    timing["total_s"] = record.timing["total_s"] + timing["truth_seeds_s"]
    return replace(record, seed_truths=truths, timing=timing)
