"""A Keras training step that also yields the probe's capture, from the same pass.

It is Keras' own ``TensorFlowTrainer.train_step`` with the forward pass
written out over the probe: the backbone (feature model) is called once, the
probe layers are called one by one (BatchNorm layers themselves, so moving
statistics update as usual; dropout applies a mask drawn by the Dropout layer
and kept), and the tape that differentiates the loss for the optimizer also
returns the gradient at the logits a^L. From these, s is an elementwise
derivative and g the small-matmul recursion over the probe (SPEC section 1):
no second forward or backward pass through the model.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from keras.src.losses import loss as _keras_loss
from keras.src.trainers.data_adapters import data_adapter_utils

from ._backend import tf
from .capture import recursion
from .chain import ProbeChain, apply_weight, elementwise_derivative, run_steps


def _first_input(x: Any) -> Any:
    return next(i for i in tf.nest.flatten(x) if i is not None)


def make_train_step(model: Any, chain: ProbeChain, on_capture: Callable[[Callable, Any], None]):
    """``train_step(data)`` for ``model`` that hands the capture to ``on_capture``.

    ``on_capture(compute, batch_size)`` runs inside the (traced) step, in
    replica context; ``compute()`` returns (acts, derivs, grads) as tensors in
    the :func:`ncap.beff` layout (so that the recorder may skip it in a
    ``tf.cond``); ``batch_size`` is this replica's batch size (0 for the empty
    batch a distributed iterator can hand out at the end of the data).
    """
    n_layers = chain.n_layers

    def train_step(data: Any) -> Any:
        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            h = chain.features_of(x, training=True)
            zs, as_, records = [h], [], []
            for i, w in enumerate(chain.weights):
                a = apply_weight(w, h)
                as_.append(a)
                if i < n_layers - 1:
                    h, rec = run_steps(chain.segments[i], a, training=True, real=True)
                    zs.append(h)
                    records.append(rec)
            a_last = as_[-1]
            tape.watch(a_last)
            y_pred, _ = run_steps(chain.tail, a_last, training=True, real=True)
            loss = model._compute_loss(
                x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True
            )
            model._loss_tracker.update_state(
                _keras_loss.unscale_loss_for_distribution(loss),
                sample_weight=tf.shape(_first_input(x))[0],
            )
            if model.optimizer is not None:
                loss = model.optimizer.scale_loss(loss)
        weights = list(model.trainable_weights)
        grads = tape.gradient(loss, weights + [a_last])
        grad_logits = grads.pop()
        if weights:
            model.optimizer.apply_gradients(zip(grads, weights, strict=False))
        else:
            warnings.warn("The model does not have any trainable weights.", stacklevel=2)

        # g^L per sample: the tape differentiated (batch-mean loss) / replicas * loss scale.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        factor = 1.0
        if model.optimizer is not None:
            factor = model.optimizer.scale_loss(tf.constant(1.0, dtype=loss.dtype))
        batch = tf.cast(tf.shape(a_last)[0], a_last.dtype)
        if grad_logits is None:
            grad_logits = tf.zeros_like(a_last)
        g_last = grad_logits * (batch * replicas / tf.cast(factor, a_last.dtype))
        g_last = tf.stop_gradient(g_last)

        def compute() -> tuple[list, list, list]:
            derivs = [
                elementwise_derivative(chain.segments[i], as_[i], records[i])
                for i in range(n_layers - 1)
            ]
            return zs, derivs, recursion(chain, derivs, g_last)

        on_capture(compute, tf.shape(a_last)[0])
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    return train_step
