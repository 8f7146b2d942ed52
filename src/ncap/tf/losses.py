"""The per-sample loss C_b and the labels it is given (SPEC section 1: g^L = dC_b/da^L_b)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ._backend import keras, tf

_SPARSE_CE = ("sparse_categorical_crossentropy",)
_DENSE_CE = ("categorical_crossentropy",)


def _loss_name(loss: Any) -> str:
    if isinstance(loss, str):
        return loss
    if isinstance(loss, keras.losses.Loss):
        fn = getattr(loss, "fn", None)
        return getattr(fn, "__name__", type(loss).__name__)
    return getattr(loss, "__name__", type(loss).__name__)


def _from_logits(loss: Any) -> bool | None:
    """A Keras loss object's ``from_logits`` (part of its public config), None if it has none."""
    try:
        cfg = loss.get_config() if isinstance(loss, keras.losses.Loss) else None
    except (NotImplementedError, TypeError, ValueError):
        cfg = None
    if isinstance(cfg, dict) and "from_logits" in cfg:
        return bool(cfg["from_logits"])
    return None


def resolve_loss(model: Any, loss: Any, y: np.ndarray, output_is_probability: bool) -> Callable:
    """A function (y_true, y_pred) -> per-sample losses, shape (B,).

    ``loss=None`` takes the model's compiled loss; an uncompiled model gets
    cross-entropy (sparse for integer labels, categorical for (B, K) labels),
    on probabilities when the probe ends in a softmax, else on logits.
    """
    if loss is None:
        loss = getattr(model, "loss", None)
    if isinstance(loss, (dict, list, tuple)):
        if isinstance(loss, (list, tuple)) and len(loss) == 1:
            loss = loss[0]
        elif isinstance(loss, dict) and len(loss) == 1:
            loss = next(iter(loss.values()))
        else:
            raise ValueError(
                "loss: the model is compiled with several losses; pass the probe output's loss "
                "explicitly with loss=..."
            )
    if loss is None:
        column = y.ndim == 2 and y.shape[1] == 1 and np.issubdtype(y.dtype, np.integer)
        sparse = y.ndim == 1 or column
        cls = (
            keras.losses.SparseCategoricalCrossentropy
            if sparse
            else keras.losses.CategoricalCrossentropy
        )
        loss = cls(from_logits=not output_is_probability)
        created = True
    else:
        created = False
    if isinstance(loss, str):
        try:
            loss = keras.losses.get(loss)
        except ValueError as err:
            raise ValueError(f"loss: unknown loss {loss!r} ({err})") from None
    if isinstance(loss, keras.losses.Loss):
        per_sample = loss.call  # unreduced: one value per sample
    elif callable(loss):
        per_sample = loss
    else:
        raise TypeError(f"loss: expected a Keras loss, a loss name or a function, got {loss!r}")
    name = _loss_name(loss)

    def fn(y_true: Any, y_pred: Any) -> Any:
        values = per_sample(y_true, y_pred)
        values = tf.convert_to_tensor(values)
        if values.shape.rank == 0:
            raise ValueError(
                f"loss: {name!r} returns one value for the whole batch; the closed form needs "
                "one loss per sample (a Keras loss, or a function returning shape (batch,))"
            )
        if values.shape.rank > 1:  # e.g. per-timestep losses: sum each sample's terms
            values = tf.reduce_sum(tf.reshape(values, [tf.shape(values)[0], -1]), axis=1)
        return values

    fn.loss_name = name  # type: ignore[attr-defined]
    fn.key = (name, None if created else id(loss), _from_logits(loss))  # type: ignore[attr-defined]
    return fn


def check_labels(y: Any, n_samples: int, n_outputs: int, loss_name: str) -> np.ndarray:
    """Labels as a NumPy array, checked against the batch and the output width."""
    try:
        arr = np.asarray(y)
    except Exception as err:  # noqa: BLE001 - anything unreadable is a bad argument
        raise TypeError(f"y: could not be read as an array ({err})") from None
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise TypeError(f"y: expected numeric labels, got dtype {arr.dtype}")
    if arr.ndim == 0 or arr.shape[0] != n_samples:
        raise ValueError(
            f"y: expected one label per sample ({n_samples} samples in x), got shape {arr.shape}"
        )
    sparse = loss_name in _SPARSE_CE or (
        loss_name not in _DENSE_CE
        and (arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1))
        and arr.dtype.kind in "biu"
    )
    if sparse:
        flat = arr.reshape(n_samples, -1)
        if flat.shape[1] != 1:
            raise ValueError(
                f"y: {loss_name} needs integer class indices of shape ({n_samples},), got shape "
                f"{arr.shape}; pass class indices or use a categorical loss with one-hot labels"
            )
        if arr.dtype.kind == "f" and not np.all(np.equal(np.mod(flat, 1), 0)):
            raise ValueError("y: class indices must be whole numbers")
        if flat.size and (flat.min() < 0 or flat.max() >= n_outputs):
            raise ValueError(
                f"y: class indices must lie in [0, {n_outputs}) for a model with {n_outputs} "
                f"outputs, got values in [{flat.min()}, {flat.max()}]"
            )
        return flat[:, 0].astype(np.int64)
    if arr.ndim != 2 or arr.shape[1] != n_outputs:
        raise ValueError(
            f"y: expected labels of shape ({n_samples}, {n_outputs}) to match the model output "
            f"(or integer class indices of shape ({n_samples},)), got shape {arr.shape}"
        )
    return arr


def check_batch_mean_loss(model: Any) -> None:
    """The training step's g^L = B * dL/da^L needs a loss that averages over the batch."""
    loss = getattr(model, "loss", None)
    if loss is None:
        raise ValueError(
            "model: compile the model (with its loss) before fit with ncap.keras.BetaEff"
        )
    if isinstance(loss, (dict, list, tuple)):
        items = list(loss.values()) if isinstance(loss, dict) else list(loss)
        if len(items) != 1:
            raise ValueError(
                "model: BetaEff needs a model with a single loss on its single output; "
                f"got {len(items)} losses"
            )
        loss = items[0]
    reduction = getattr(loss, "reduction", "sum_over_batch_size")
    if reduction != "sum_over_batch_size" and isinstance(loss, keras.losses.Loss):
        raise ValueError(
            f"model: the compiled loss uses reduction={reduction!r}; BetaEff reads per-sample "
            "gradients as batch size times the gradient of the batch-mean loss, so compile with "
            "reduction='sum_over_batch_size' (the Keras default)"
        )
