"""The in-graph buffer of per-step beta values that ``BetaEff``'s training step writes.

The step appends to variables; Python reads them once per epoch, so Keras'
asynchronous batch-end dispatch stays on. A step whose beta is not finite (a
NaN or Inf in the pass) is not recorded but counted.
"""

from __future__ import annotations

from typing import Any

from ._backend import tf
from .ingraph import beta_in_graph

# Buffer length when fit does not know the number of steps in an epoch.
UNKNOWN_EPOCH_CAPACITY = 65536


class StepRecorder:
    """Buffer of (step index, beta) for one model: records one step in ``every``."""

    def __init__(self, model: Any, every: int, reduction: str, capacity: int) -> None:
        self.every = every
        self.reduction = reduction
        self.capacity = capacity
        with model.distribute_strategy.scope():
            kw = dict(
                trainable=False,
                synchronization=tf.VariableSynchronization.ON_WRITE,
                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
            )
            self.values = tf.Variable(tf.zeros([capacity], tf.float64), name="ncap_beta", **kw)
            self.indices = tf.Variable(tf.zeros([capacity], tf.int64), name="ncap_beta_step", **kw)
            self.count = tf.Variable(tf.constant(0, tf.int64), name="ncap_beta_count", **kw)
            self.step = tf.Variable(tf.constant(0, tf.int64), name="ncap_step", **kw)
            self.skipped = tf.Variable(tf.constant(0, tf.int64), name="ncap_skipped", **kw)

    def reset(self) -> None:
        for v in (self.count, self.step, self.skipped):
            v.assign(0)

    def record(self, compute: Any, local_batch: Any) -> None:
        """Inside the traced step: compute beta when due and append it to the buffer."""
        every, capacity = self.every, self.capacity
        distributed = tf.distribute.get_strategy().num_replicas_in_sync > 1
        due = tf.equal(self.step % every, 0)
        if every == 1 or distributed:  # collectives stay outside conditionals
            beta, total = beta_in_graph(*compute(), reduction=self.reduction, with_batch_size=True)
            nonempty = total > 0
        else:
            nonempty = local_batch > 0
            beta = tf.cond(
                tf.logical_and(due, nonempty),
                lambda: beta_in_graph(*compute(), reduction=self.reduction),
                lambda: tf.constant(0.0, tf.float64),
            )
        # Empty batches (the end of some datasets) are not steps.
        taken = tf.logical_and(due, nonempty)
        finite = tf.math.is_finite(beta)
        record = tf.logical_and(taken, finite)
        # Past the end of the buffer keep counting (the epoch-end read reports it), write nothing.
        slot = tf.minimum(self.count, capacity - 1)
        write = tf.logical_and(record, self.count < capacity)
        value = tf.where(write, beta, self.values[slot])
        index = tf.where(write, self.step, self.indices[slot])
        for var, entry in ((self.values, value), (self.indices, index)):
            if tf.distribute.has_strategy():  # mirrored variables take whole assignments only
                var.assign(tf.tensor_scatter_nd_update(var, [[slot]], [entry]))
            else:
                var.scatter_nd_update([[slot]], [entry])
        self.count.assign_add(tf.cast(record, tf.int64))
        self.skipped.assign_add(tf.cast(tf.logical_and(taken, tf.logical_not(finite)), tf.int64))
        self.step.assign_add(tf.cast(nonempty, tf.int64))

    def drain(self) -> tuple[list[float], list[int], int]:
        """The values and step indices recorded since the last drain, and the steps skipped."""
        n = int(self.count.numpy())
        skipped = int(self.skipped.numpy())
        self.count.assign(0)
        self.skipped.assign(0)
        if n > self.capacity:
            raise RuntimeError(
                f"BetaEff: {n} steps were recorded in one epoch but the buffer holds "
                f"{self.capacity}; pass steps_per_epoch to fit (or use every > 1)"
            )
        values = [float(v) for v in self.values.numpy()[:n]]
        indices = [int(i) for i in self.indices.numpy()[:n]]
        return values, indices, skipped
