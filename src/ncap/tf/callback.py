"""``ncap.tf.BetaEff`` (alias ``ncap.keras.BetaEff``): beta_eff from the training step's pass.

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
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

__all__ = ["BetaEff"]

# Buffer length when fit does not know the number of steps in an epoch.
_UNKNOWN_EPOCH_CAPACITY = 65536


class BetaEff(keras.callbacks.Callback):
    """Record the probe's training beta_eff every ``every`` steps during ``fit``.

    While ``fit`` runs, the model's ``train_step`` is replaced by one that does
    exactly what Keras' does and, from the same forward pass and the same
    gradient tape, captures z, s and g of the probe (SPEC section 1; BatchNorm
    batch statistics and the step's dropout masks held constant) and computes
    beta_eff in-graph (SPEC section 3, float64). The original step is restored
    when training ends. It works under ``tf.function`` (the default),
    ``run_eagerly=True``, ``steps_per_execution > 1`` (every step is kept in an
    in-graph buffer) and ``tf.distribute`` strategies, where the replicas'
    per-sample arrays are gathered so that the value is beta of the global
    batch (each replica's BatchNorm uses its own batch statistics, as in the
    training step itself). The buffer is read once per epoch, so Keras'
    asynchronous batch-end dispatch stays on (the progress bar shows
    ``beta_eff`` at the end of each epoch, not during it). With sample
    weights, g^L is the gradient of the weighted loss the optimizer sees.

    Keras 3.15 / TF 2.21 cannot ``fit`` a MirroredStrategy model with
    ``steps_per_execution > 1`` at all (keras-team/keras#19246), with or
    without this callback.

    Args:
        every: record one step in ``every`` (steps 0, every, 2*every, ... of the run).
        reduction: ``"batch"`` (beta of each step's batch, SPEC section 3) or
            ``"sample"`` (each step records the mean over the batch of the
            per-sample betas).
        layers: names of the probe's weight (Dense) layers, input to output, for a
            model not built by :func:`ncap.attach_probe`.

    Attributes:
        step_values: recorded values, in step order (floats).
        step_indices: the training step (counted from 0 over the run) of each value.
        epoch_values: per epoch, the mean of that epoch's recorded values; also
            written to ``logs["beta_eff"]`` (History, CSVLogger, TensorBoard,
            progress bar). NaN for an epoch with no recorded step.
    """

    def __init__(
        self, every: int = 1, reduction: str = "batch", layers: Sequence[Any] | None = None
    ) -> None:
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"every: expected an integer >= 1, got {every!r}")
        if reduction not in ("batch", "sample"):
            raise ValueError(f"reduction: expected 'batch' or 'sample', got {reduction!r}")
        self.every = int(every)
        self.reduction = reduction
        self.layers = None if layers is None else list(layers)
        self.step_values: list[float] = []
        self.step_indices: list[int] = []
        self.epoch_values: list[float] = []
        self._epoch: list[float] = []
        self._patched: Any = None
        self._vars: Any = None
        self._traced: Any = None  # (compile key, traced train function) kept between fits
        self._keras_function: Any = None

    # -------------------------------------------------------------- hooking in

    def set_model(self, model: Any) -> None:
        super().set_model(model)
        if self._patched is model:
            return
        from .capture import check_depth, get_chain
        from .losses import check_batch_mean_loss
        from .train_step import make_train_step

        chain = get_chain(model, self.layers)
        check_depth(chain)
        if not chain.closed_form_ok:
            raise ValueError(
                "BetaEff records the closed form, which needs a Dense probe with elementwise "
                f"layers between ({'; '.join(chain.closed_form_problems)}); for other probes "
                "call ncap.beff(model, x, y, method='autodiff') between epochs"
            )
        check_batch_mean_loss(model)
        from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

        if type(model).train_step is not TensorFlowTrainer.train_step:
            raise ValueError(
                f"model: {type(model).__name__} overrides train_step; BetaEff runs Keras' own "
                "training step with the capture added and would replace yours. Record beta with "
                "ncap.beff(model, x, y, training=True) instead"
            )
        reuse = self._traced is not None and self._traced[0] == self._compile_key(model)
        if not reuse:
            self._step_fn = make_train_step(model, chain, self._record)
            self._vars = None
        self._keras_function = model.train_function  # Keras' own traced step, put back at the end
        object.__setattr__(model, "train_step", self._step_fn)  # instance attribute shadows it
        # A new step needs a new trace; the same callback on the same compiled model reuses its own.
        model.train_function = self._traced[1] if reuse else None
        self._patched = model

    def set_params(self, params: dict) -> None:
        # Called by fit after set_model and before the step is traced: size the buffer for one
        # epoch, so that it is read once per epoch (no per-batch hook, which would make Keras
        # synchronise after every step).
        super().set_params(params)
        model = self._patched
        if model is None:
            return
        from ._backend import tf

        steps = (params or {}).get("steps")
        need = int(steps) if steps else _UNKNOWN_EPOCH_CAPACITY
        if self._vars is not None and self._capacity >= need:
            return
        self._capacity = need
        with model.distribute_strategy.scope():
            kw = dict(
                trainable=False,
                synchronization=tf.VariableSynchronization.ON_WRITE,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
            self._vars = (
                tf.Variable(tf.zeros([need], tf.float64), name="ncap_beta_buffer", **kw),
                tf.Variable(tf.constant(0, tf.int64), name="ncap_beta_count", **kw),
                tf.Variable(tf.constant(0, tf.int64), name="ncap_step", **kw),
            )
        model.train_function = None  # new variables: trace again

    @staticmethod
    def _compile_key(model: Any) -> tuple:
        """What a traced step depends on: recompiling the model invalidates it."""
        return (
            id(model),
            id(model.optimizer),
            id(getattr(model, "loss", None)),
            getattr(model, "steps_per_execution", 1),
            bool(model.run_eagerly),
            getattr(model, "_jit_compile", None),
            id(model.distribute_strategy),
        )

    def _record(self, compute: Any, local_batch: Any) -> None:
        """Inside the traced step: compute beta when due and append it to the buffer."""
        from ._backend import tf
        from .ingraph import beta_in_graph

        if self._vars is None:
            raise RuntimeError("BetaEff: the training step ran before fit() set the callback up")
        buffer, count, step = self._vars
        every, reduction, capacity = self.every, self.reduction, self._capacity
        distributed = tf.distribute.get_strategy().num_replicas_in_sync > 1
        due = tf.equal(step % every, 0)

        if every == 1 or distributed:  # collectives stay outside conditionals
            beta, total = beta_in_graph(*compute(), reduction=reduction, with_batch_size=True)
            nonempty = total > 0
        else:
            nonempty = local_batch > 0
            beta = tf.cond(
                tf.logical_and(due, nonempty),
                lambda: beta_in_graph(*compute(), reduction=reduction),
                lambda: tf.constant(0.0, tf.float64),
            )
        # Empty batches (the end of some datasets) are not steps. Past the end of the buffer,
        # keep counting (the epoch-end read reports the overflow) but write nothing.
        record = tf.logical_and(due, nonempty)
        slot = tf.minimum(count, capacity - 1)
        entry = tf.where(tf.logical_and(record, count < capacity), beta, buffer[slot])
        if tf.distribute.has_strategy():  # mirrored variables take whole assignments only
            buffer.assign(tf.tensor_scatter_nd_update(buffer, [[slot]], [entry]))
        else:
            buffer.scatter_nd_update([[slot]], [entry])
        count.assign_add(tf.cast(record, tf.int64))
        step.assign_add(tf.cast(nonempty, tf.int64))

    def _unpatch(self) -> None:
        model = self._patched
        if model is not None:
            if "train_step" in vars(model):
                object.__delattr__(model, "train_step")
            self._traced = (self._compile_key(model), model.train_function)
            model.train_function = self._keras_function  # None: the next fit traces Keras' step
        self._patched = None

    # -------------------------------------------------------------- reading values

    def _drain(self) -> None:
        buffer, count, step = self._vars
        n = int(count.numpy())
        if n == 0:
            return
        if n > self._capacity:
            raise RuntimeError(
                f"BetaEff: {n} steps were recorded in one epoch but the buffer holds "
                f"{self._capacity}; pass steps_per_epoch to fit (or use every > 1)"
            )
        values = buffer.numpy()[:n]
        last = int(step.numpy()) - 1
        # The n recorded steps are the last n multiples of `every` up to `last`.
        top = last - last % self.every
        idx = [top - self.every * (n - 1 - k) for k in range(n)]
        count.assign(0)
        self.step_values.extend(float(v) for v in values)
        self.step_indices.extend(idx)
        self._epoch.extend(float(v) for v in values)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.step_values, self.step_indices, self.epoch_values = [], [], []
        buffer, count, step = self._vars
        count.assign(0)
        step.assign(0)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._drain()
        value = float(np.mean(self._epoch)) if self._epoch else math.nan
        self.epoch_values.append(value)
        if logs is not None:
            logs["beta_eff"] = value

    def on_train_end(self, logs: dict | None = None) -> None:
        self._drain()
        self._unpatch()
