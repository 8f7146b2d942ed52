"""``ncap.tf.BetaEff`` (alias ``ncap.keras.BetaEff``): beta_eff per epoch during ``fit``.

    model = ncap.attach_probe(backbone, num_classes=10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    cb = ncap.keras.BetaEff()
    history = model.fit(x, y, epochs=5, callbacks=[cb])
    history.history["beta_eff"]     # one value per epoch (mean over its steps)
    cb.step_values                  # one value per recorded step

Importing this module imports TensorFlow (Keras 3, TensorFlow backend).
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..arrays.spec import Reduction, check_reduction, check_threads
from ._backend import keras
from .options import PROTOCOLS, Protocol, check_count, check_option

__all__ = ["BetaEff"]


class BetaEff(keras.callbacks.Callback):
    """Record the probe's training beta_eff during ``fit``, by one or both protocols.

    ``protocol="step"`` (default; SPEC section 6): for the duration of each
    ``fit``, the training step is one that does exactly what Keras' does and,
    from the same forward pass, captures z, s and g of the probe (SPEC section
    1; BatchNorm batch statistics and the step's dropout masks held constant)
    and computes beta_eff in-graph (SPEC section 3, float64), one step in
    ``every``. It works under ``tf.function`` (the default),
    ``run_eagerly=True``, ``steps_per_execution > 1`` (every step is kept in an
    in-graph buffer, read once per epoch, so Keras' asynchronous batch-end
    dispatch stays on), ``tf.distribute`` strategies (the replicas' per-sample
    arrays are gathered: beta of the global batch, each replica's BatchNorm
    using its own batch statistics as in the step itself), sample weights (g^L
    is the gradient of the weighted loss the optimizer sees) and mixed
    precision (g^L is taken before loss scaling; a step whose beta is not
    finite is skipped and counted in ``skipped_steps``). Keras' own step is
    back when ``fit`` returns or raises (a ``fit`` that raised is detected at
    the next call of the train function); ``evaluate`` and ``predict`` are not
    touched. Keras 3.15 / TF 2.21 cannot ``fit`` a MirroredStrategy model with
    ``steps_per_execution > 1`` at all (keras-team/keras#19246).

    ``protocol="epoch"`` (the paper's): after each epoch, a pass over ``data``
    in inference mode (dropout off, moving statistics), each batch of
    ``batch_size`` captured and computed by the compiled kernel; the epoch's
    value is the mean over the batches. It changes nothing in training.
    ``protocol="both"`` records both.

    Args:
        every: step protocol: record one step in ``every`` (steps 0, every, 2*every, ...).
        reduction: ``"batch"`` (beta of each batch, SPEC section 3) or
            ``"sample"`` (each batch's value is the mean over it of the per-sample betas).
        layers: names of the probe's weight (Dense) layers, input to output, for a
            model not built by :func:`ncap.attach_probe`.
        protocol: ``"step"``, ``"epoch"`` or ``"both"``.
        data: epoch protocol: the training data ``(x_train, y_train)``.
        batch_size: epoch protocol: batch size of the pass.
        threads: epoch protocol: CPU threads of the compiled kernel (0 = all cores). One by
            default: a batch is little work, and more threads contend with TensorFlow's.

    Attributes:
        step_values: step protocol: recorded values, in step order (floats).
        step_indices: the training step (counted from 0 over the run) of each value.
        skipped_steps: step protocol: steps due but not recorded because their beta
            was not finite.
        epoch_values: step protocol: per epoch, the mean of that epoch's recorded values
            (NaN for an epoch with none); also ``logs["beta_eff"]`` (History, CSVLogger,
            TensorBoard, progress bar).
        pass_values: epoch protocol: per epoch, the mean over the pass's batches; also
            ``logs["beta_eff_epoch"]``.
        pass_seconds: epoch protocol: wall time of each pass.
    """

    #: The ``logs`` key each protocol writes.
    LOG_KEYS = {"step": "beta_eff", "epoch": "beta_eff_epoch"}

    def __init__(
        self,
        every: int = 1,
        reduction: Reduction = "batch",
        layers: Sequence[Any] | None = None,
        *,
        protocol: Protocol = "step",
        data: tuple[Any, Any] | None = None,
        batch_size: int = 32,
        threads: int = 1,
    ) -> None:
        super().__init__()
        from .epoch_pass import check_data

        self.every = check_count(every, "every")
        self.reduction = check_reduction(reduction)
        self.layers = None if layers is None else list(layers)
        self.protocol = check_option(protocol, "protocol", PROTOCOLS)
        self.batch_size = check_count(batch_size, "batch_size")
        self.threads = check_threads(threads)
        if protocol == "step":
            if data is not None:
                raise ValueError("data: only the epoch protocol reads data; pass protocol='epoch'")
            self._data = None
        elif data is None:
            raise ValueError(f"data: protocol={protocol!r} needs the training data (x, y)")
        else:
            self._data = check_data(data)
        self.step_values: list[float] = []
        self.step_indices: list[int] = []
        self.skipped_steps = 0
        self.epoch_values: list[float] = []
        self.pass_values: list[float] = []
        self.pass_seconds: list[float] = []
        self._epoch: list[float] = []
        self._model_ref: Any = None
        self._recorder: Any = None
        self._guard: Any = None

    @property
    def records_steps(self) -> bool:
        return self.protocol in ("step", "both")

    @property
    def records_passes(self) -> bool:
        return self.protocol in ("epoch", "both")

    # The model is held weakly: a callback kept for its values does not keep the model alive.
    @property
    def model(self) -> Any:
        return None if self._model_ref is None else self._model_ref()

    def set_model(self, model: Any) -> None:
        self._model_ref = None if model is None else weakref.ref(model)

    # -------------------------------------------------------------- fit

    def on_train_begin(self, logs: dict | None = None) -> None:
        from .capture import check_depth, get_chain

        self._stop()  # a previous fit with this callback that raised
        model = self.model
        if model is None:
            raise RuntimeError(
                "BetaEff: no model; pass the callback to model.fit(..., callbacks=[...])"
            )
        self.step_values, self.step_indices, self.epoch_values = [], [], []
        self.pass_values, self.pass_seconds, self.skipped_steps = [], [], 0
        if self.records_passes:
            chain = get_chain(model, self.layers)
            check_depth(chain)
            chain.require_closed_form(
                "model", "BetaEff(protocol='epoch')", "use protocol='step' with a Dense probe"
            )
        if self.records_steps:
            from .fit_hook import start

            self._recorder, self._guard = start(
                model,
                every=self.every,
                reduction=self.reduction,
                layers=self.layers,
                params=self.params,
            )

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        if self._guard is not None:
            self._guard.arm()  # the next call of the train function is this fit's

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.records_steps:
            self._drain()
            value = float(np.mean(self._epoch)) if self._epoch else math.nan
            self.epoch_values.append(value)
            if logs is not None:
                logs[self.LOG_KEYS["step"]] = value
        if self.records_passes:
            value = self._pass()
            if logs is not None:
                logs[self.LOG_KEYS["epoch"]] = value

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._recorder is not None:
            self._drain()
        self._stop()

    # -------------------------------------------------------------- helpers

    def _stop(self) -> None:
        if self._guard is not None:
            self._guard.release()
        self._guard = None

    def _drain(self) -> None:
        values, indices, skipped = self._recorder.drain()
        self.step_values.extend(values)
        self.step_indices.extend(indices)
        self.skipped_steps += skipped
        self._epoch.extend(values)

    def _pass(self) -> float:
        from .epoch_pass import batch_values

        x, y, n = self._data
        t0 = time.perf_counter()
        values = batch_values(
            self.model,
            x,
            y,
            n,
            batch_size=self.batch_size,
            layers=self.layers,
            reduction=self.reduction,
            threads=self.threads,
        )
        self.pass_seconds.append(time.perf_counter() - t0)
        value = float(np.mean(values))
        self.pass_values.append(value)
        return value
