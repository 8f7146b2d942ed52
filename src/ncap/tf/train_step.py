"""A Keras training step that also yields the probe's capture, from the same pass.

It does what Keras' own ``train_step`` does, with public Keras API only
(``keras.utils.unpack_x_y_sample_weight``, ``model.compute_loss``, the "loss"
metric of ``model.metrics``, ``optimizer.scale_loss`` / ``apply_gradients``,
``model.compute_metrics``), and writes the forward pass out over the probe
(:meth:`ProbeChain.replay`): the backbone (feature model) is called once, the
probe layers one by one (BatchNorm layers themselves, so moving statistics
update as usual; dropout applies a mask drawn by the Dropout layer and kept).

The capture needs no second pass through the model: g^L is the gradient of the
batch loss at the logits through the tail alone (a few ops), s an elementwise
derivative and g the small-matmul recursion over the probe (SPEC section 1).
g^L is taken from the loss before loss scaling, with the per-sample factor
applied before the logits' dtype is reached, so a float16 model's loss-scale
overflow (mixed precision) does not reach it. The capture is handed over before
``apply_gradients``, and the recursion uses the kernels the forward pass read:
trainable probe layers are seen as the forward pass saw them.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

from ._backend import keras, tf
from .capture import recursion
from .chain import ProbeChain, elementwise_derivative


def _first_input(x: Any) -> Any:
    return next(i for i in tf.nest.flatten(x) if i is not None)


def _loss_metric(model: Any) -> Any:
    """The compiled model's loss tracker: the metric named "loss" (as Keras' guides use it)."""
    return next((m for m in model.metrics if m.name == "loss"), None)


def _takes_training(method: Any) -> bool:
    params = inspect.signature(method).parameters
    return "training" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _wide_dtype(dtype: Any) -> Any:
    """float16/bfloat16 tensors are recorded in float32."""
    return tf.float32 if dtype in (tf.float16, tf.bfloat16) else dtype


def make_train_step(model: Any, chain: ProbeChain, on_capture: Callable[[Callable, Any], None]):
    """``train_step(data)`` for ``model`` that hands the capture to ``on_capture``.

    ``on_capture(compute, batch_size)`` runs inside the (traced) step, in
    replica context, before the optimizer update; ``compute()`` returns
    (acts, derivs, grads) as tensors in the :func:`ncap.beff` layout (so that
    the recorder may skip it in a ``tf.cond``); ``batch_size`` is this
    replica's batch size (0 for the empty batch a distributed iterator can
    hand out at the end of the data).
    """
    n_layers = chain.n_layers
    loss_takes_training = _takes_training(model.compute_loss)

    def compute_loss(x: Any, y: Any, y_pred: Any, sample_weight: Any) -> Any:
        kw = {"training": True} if loss_takes_training else {}
        return model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, **kw)

    def train_step(data: Any) -> Any:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            rep = chain.replay(x, training=True, real=True)
            a_last = rep.a[-1]
            with tf.GradientTape() as tail_tape:  # records the tail and the loss only
                tail_tape.watch(a_last)
                y_pred = chain.tail_outputs(a_last, training=True, real=True)
                loss = compute_loss(x, y, y_pred, sample_weight)
            tracker = _loss_metric(model)
            if tracker is not None:  # the loss is per replica: loss / replicas
                tracker.update_state(
                    loss * tf.cast(replicas, loss.dtype),
                    sample_weight=tf.shape(_first_input(x))[0],
                )
            scaled = loss if model.optimizer is None else model.optimizer.scale_loss(loss)
        weights = list(model.trainable_weights)
        grads = tape.gradient(scaled, weights) if weights else []

        # g^L per sample = (local batch * replicas) d(loss)/da^L; the factor is applied at the
        # loss, so the gradient is O(1) where it enters a^L's dtype (no loss scale involved).
        batch = tf.shape(a_last)[0]
        per_sample = tf.cast(batch * replicas, loss.dtype)
        g_last = tail_tape.gradient(loss, a_last, output_gradients=per_sample)
        g_last = tf.zeros_like(a_last) if g_last is None else g_last
        g_last = tf.stop_gradient(tf.cast(g_last, _wide_dtype(g_last.dtype)))

        def compute() -> tuple[list, list, list]:
            derivs = [
                elementwise_derivative(chain.segments[i], rep.a[i], rep.records[i])
                for i in range(n_layers - 1)
            ]
            return rep.z, derivs, recursion(chain, derivs, g_last, rep.kernels)

        on_capture(compute, batch)  # before the update: the probe's variables as the pass saw them
        if weights:
            model.optimizer.apply_gradients(zip(grads, weights, strict=False))
        else:
            warnings.warn("The model does not have any trainable weights.", stacklevel=2)
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    return train_step
