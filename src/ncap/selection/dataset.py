"""The target dataset of a selection run: three splits and their labels, checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SPLITS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


@dataclass(frozen=True)
class Dataset:
    """Images (N, H, W, C) or feature vectors (N, D) and integer labels for three splits.

    ``x_test``/``y_test`` may be ``None`` when no truth is wanted (not evaluation mode).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    num_classes: int = 0
    name: str = "data"
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        xs = {"x_train": self.x_train, "x_val": self.x_val, "x_test": self.x_test}
        ys = {"y_train": self.y_train, "y_val": self.y_val, "y_test": self.y_test}
        for (xn, x), (yn, y) in zip(xs.items(), ys.items(), strict=True):
            if (x is None) != (y is None):
                raise ValueError(f"data: {xn} and {yn} must both be given or both be None")
            if x is None:
                if xn != "x_test":
                    raise ValueError(f"data: {xn} is required")
                continue
            x = np.asarray(x)
            y = np.asarray(y)
            if x.ndim not in (2, 3, 4):
                raise ValueError(
                    f"data: {xn} must have shape (N, D), (N, H, W) or (N, H, W, C), got {x.shape}"
                )
            if x.ndim == 3:  # grey images without a channel axis
                x = x[..., None]
            if not np.issubdtype(x.dtype, np.number):
                raise TypeError(f"data: {xn} must be numeric, got dtype {x.dtype}")
            x = x.astype(np.float32, copy=False)
            if not np.all(np.isfinite(x)):
                raise ValueError(f"data: {xn} contains NaN or Inf")
            y = _as_labels(y, yn)
            if len(x) != len(y):
                raise ValueError(f"data: {xn} has {len(x)} samples but {yn} has {len(y)}")
            if len(x) == 0:
                raise ValueError(f"data: {xn} is empty")
            object.__setattr__(self, xn, x)
            object.__setattr__(self, yn, y)
        shapes = {x.shape[1:] for x in (self.x_train, self.x_val, self.x_test) if x is not None}
        if len(shapes) != 1:
            raise ValueError(f"data: the splits have different sample shapes {sorted(shapes)}")
        seen = (
            int(max(int(y.max()) for y in (self.y_train, self.y_val, self.y_test) if y is not None))
            + 1
        )
        if self.num_classes == 0:
            object.__setattr__(self, "num_classes", seen)
        elif seen > self.num_classes:
            raise ValueError(f"data: labels go up to {seen - 1} but num_classes={self.num_classes}")
        if self.num_classes < 2:
            raise ValueError(f"data: need at least 2 classes, got {self.num_classes}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample."""
        return tuple(self.x_train.shape[1:])

    @property
    def has_test(self) -> bool:
        return self.x_test is not None

    def summary(self) -> dict[str, Any]:
        """JSON-ready description (sizes, shape, classes) for the report."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "n_train": len(self.x_train),
            "n_val": len(self.x_val),
            "n_test": 0 if self.x_test is None else len(self.x_test),
            **self.info,
        }


def _as_labels(y: np.ndarray, name: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] > 1:  # one-hot
        y = np.argmax(y, axis=1)
    y = y.reshape(len(y)) if y.ndim == 2 and y.shape[1] == 1 else y
    if y.ndim != 1:
        raise ValueError(f"data: {name} must be integer class labels of shape (N,), got {y.shape}")
    if np.issubdtype(y.dtype, np.floating):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError(f"data: {name} must hold integer class labels")
    elif not np.issubdtype(y.dtype, np.integer):
        raise TypeError(f"data: {name} must hold integer class labels, got dtype {y.dtype}")
    y = y.astype(np.int64)
    if len(y) and y.min() < 0:
        raise ValueError(f"data: {name} has negative labels")
    return y
