"""The ``epoch`` beta protocol (docs/SPEC.md section 6): a pass over the training data.

After an epoch: for each batch of the given data, in inference mode (dropout
off, BatchNorm moving statistics), :func:`ncap.capture` the probe and compute
beta with the compiled kernel (:func:`ncap.arrays.beff`); the epoch's value is
the mean over the batches of the batch beta. Inference mode reads the model
and writes nothing (no moving statistics, no random-generator state), so the
pass leaves training unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..arrays import beff as beff_arrays
from ._backend import tf
from .capture import capture


def check_data(data: Any) -> tuple[Any, np.ndarray, int]:
    """``data=(x, y)``: inputs (an array or a nest of arrays) and one label per sample."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise TypeError(f"data: expected a pair (x_train, y_train), got {type(data).__name__}")
    x, y = data
    if isinstance(x, tf.data.Dataset) or hasattr(x, "__next__"):
        raise TypeError("data: pass the training arrays (x_train, y_train), not a dataset")
    leaves = tf.nest.flatten(x)
    if not leaves or any(len(getattr(leaf, "shape", ())) == 0 for leaf in leaves):
        raise ValueError("data: x must be an array (or a nest of arrays) with a batch axis")
    n = int(leaves[0].shape[0])
    try:
        y = np.asarray(y)
    except Exception as err:  # noqa: BLE001 - anything unreadable is a bad argument
        raise TypeError(f"data: y could not be read as an array ({err})") from None
    if y.ndim == 0 or y.shape[0] != n or any(int(leaf.shape[0]) != n for leaf in leaves):
        raise ValueError(
            f"data: x and y must hold the same number of samples, got {n} inputs and labels of "
            f"shape {y.shape}"
        )
    if n == 0:
        raise ValueError("data: no samples")
    return x, y, n


def batch_values(
    model: Any,
    x: Any,
    y: np.ndarray,
    n: int,
    *,
    batch_size: int,
    layers: Sequence[Any] | None,
    reduction: str,
    threads: int,
) -> list[float]:
    """Beta of each batch of (x, y) in order (inference mode)."""
    values = []
    for start in range(0, n, batch_size):
        part = slice(start, start + batch_size)
        xb = tf.nest.map_structure(lambda leaf, part=part: leaf[part], x)
        cap = capture(model, xb, y[part], training=False, layers=layers)
        result = beff_arrays(cap.acts, cap.derivs, cap.grads, reduction=reduction, threads=threads)
        values.append(float(np.mean(result.value)))  # "sample": the batch mean of the betas
    return values
