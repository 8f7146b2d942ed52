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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .candidates import CandidateSpec
from .dataset import Dataset
from .record import RECORD_VERSION, CandidateRecord, finite_list


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


def _limit_threads(threads: int) -> None:
    """Cap TensorFlow's thread pools (several workers share the cores)."""
    if threads <= 0:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, threads))
    except RuntimeError:  # TensorFlow already initialised in this process: keep its pools
        pass


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
    try:
        _limit_threads(settings.threads)
        import keras

        import ncap
        from ncap.tf import BetaEff

        from .candidates import build_backbone
        from .logme import logme

        stage = "build"
        keras.backend.clear_session()  # one candidate's graphs must not pile up on the next
        keras.utils.set_random_seed(settings.seed)
        t = time.perf_counter()
        backbone = build_backbone(spec, data.input_shape)
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
        keras.utils.set_random_seed(settings.seed)
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
        beta_cb = BetaEff()
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
        h = hist.history
        if "beta_eff" not in h:
            raise RuntimeError("the BetaEff callback wrote no 'beta_eff' to the training logs")

        truth = None
        if settings.truth_epochs is not None and data.has_test:
            stage = "evaluate"
            probs = _batched(model, data.x_test)
            truth = float(np.mean(np.argmax(probs, axis=1) == data.y_test))
        timing["total_s"] = time.perf_counter() - t_start
        return CandidateRecord(
            name=spec.name,
            candidate=spec.describe(),
            key=key,
            status="ok",
            epochs_trained=len(h["beta_eff"]),
            beta=finite_list(h["beta_eff"]),
            val_accuracy=finite_list(h["val_accuracy"]),
            val_loss=finite_list(h.get("val_loss", [])),
            train_accuracy=finite_list(h.get("accuracy", [])),
            train_loss=finite_list(h.get("loss", [])),
            logme=logme_score,
            logme_error=logme_error,
            feature_dim=int(feats.shape[1]),
            backbone_params=int(backbone.count_params()),
            truth=truth,
            truth_epoch=settings.truth_epochs if truth is not None else None,
            timing=timing,
        )
    except Exception as err:  # one bad candidate must not end the run
        return failed_record(
            spec, err, key=key, stage=stage, timing={"total_s": time.perf_counter() - t_start}
        )
