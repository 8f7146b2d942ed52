"""``ncap.keras.BetaEff``: beta_eff recorded from the training step's own pass.

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


class BetaEff(keras.callbacks.Callback):
    """Record the probe's training beta_eff every ``every`` steps during ``fit``.

    While ``fit`` runs, the model's ``train_step`` is replaced by one that does
    exactly what Keras' does and, from the same forward pass and the same
    gradient tape, captures z, s and g of the probe (SPEC section 1; BatchNorm
    batch statistics and the step's dropout masks held constant) and computes
    beta_eff in-graph (SPEC section 3, float64). The original step is restored
    when training ends. It works under ``tf.function`` (the default),
    ``run_eagerly=True``, ``steps_per_execution > 1`` (every step is kept, in a
    buffer read after each execution) and ``tf.distribute`` strategies, where
    the replicas' statistics are summed so that the value is beta of the
    global batch.

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

    def __init__(self, every: int = 1, reduction: str = "batch",
                 layers: Sequence[Any] | None = None) -> None:
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

    # -------------------------------------------------------------- hooking in

    def set_model(self, model: Any) -> None:
        super().set_model(model)
        if self._patched is model:
            return
        from .tf._backend import tf
        from .tf.capture import check_depth, get_chain
        from .tf.losses import check_batch_mean_loss
        from .tf.train_step import make_train_step

        chain = get_chain(model, self.layers)
        check_depth(chain)
        if not chain.closed_form_ok:
            raise ValueError(
                "BetaEff records the closed form, which needs a Dense probe with elementwise "
                f"layers between ({'; '.join(chain.closed_form_problems)}); for other probes "
                "call ncap.beff(model, x, y, method='autodiff') between epochs"
            )
        check_batch_mean_loss(model)
        capacity = max(1, int(getattr(model, "steps_per_execution", 1) or 1))
        with model.distribute_strategy.scope():
            kw = dict(trainable=False, synchronization=tf.VariableSynchronization.ON_WRITE,
                      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
            self._vars = (
                tf.Variable(tf.zeros([capacity], tf.float64), name="ncap_beta_buffer", **kw),
                tf.Variable(tf.constant(0, tf.int64), name="ncap_beta_count", **kw),
                tf.Variable(tf.constant(0, tf.int64), name="ncap_step", **kw),
            )
        self._capacity = capacity
        step = make_train_step(model, chain, self._recorder(model))
        object.__setattr__(model, "train_step", step)  # instance attribute shadows the method
        model.train_function = None  # make fit trace the new step
        self._patched = model

    def _recorder(self, model: Any):
        from .tf._backend import tf
        from .tf.ingraph import beta_in_graph

        every, reduction, capacity = self.every, self.reduction, self._capacity
        buffer, count, step = self._vars

        def record(compute: Any) -> None:
            distributed = tf.distribute.get_strategy().num_replicas_in_sync > 1
            due = tf.equal(step % every, 0)

            def value() -> Any:
                return beta_in_graph(*compute(), reduction=reduction)

            if every == 1 or distributed:  # collectives stay outside conditionals
                beta = value()
            else:
                beta = tf.cond(due, value, lambda: tf.constant(0.0, tf.float64))
            slot = tf.minimum(count, capacity - 1)
            buffer.assign(tf.tensor_scatter_nd_update(buffer, [[slot]], [beta]))
            count.assign_add(tf.cast(due, tf.int64))
            step.assign_add(1)

        return record

    def _unpatch(self) -> None:
        model = self._patched
        if model is not None:
            if "train_step" in vars(model):
                object.__delattr__(model, "train_step")
            model.train_function = None  # the next fit traces Keras' own step again
        self._patched = None

    # -------------------------------------------------------------- reading values

    def _drain(self) -> None:
        buffer, count, step = self._vars
        n = int(count.numpy())
        if n == 0:
            return
        if n > self._capacity:
            raise RuntimeError(f"BetaEff: {n} steps recorded between reads, buffer holds "
                               f"{self._capacity}")
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

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._drain()
        if logs is not None and self._epoch:
            logs["beta_eff"] = float(np.mean(self._epoch))  # running mean for the progress bar

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._drain()
        value = float(np.mean(self._epoch)) if self._epoch else math.nan
        self.epoch_values.append(value)
        if logs is not None:
            logs["beta_eff"] = value

    def on_train_end(self, logs: dict | None = None) -> None:
        self._drain()
        self._unpatch()
