"""The target dataset of a selection run: three splits and their labels, checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

SPLITS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
#: Labels above this are refused before any cast (it is exact in float64 and int64).
MAX_LABEL = 2**53


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
    num_classes: int = 0  # 0: the labels say (max + 1); validated, see _check_classes
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
            if np.issubdtype(x.dtype, np.complexfloating):  # a cast would drop the imaginary part
                raise TypeError(f"data: {xn} is complex ({x.dtype}); ncap needs real-valued inputs")
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
        labels = [y for y in (self.y_train, self.y_val, self.y_test) if y is not None]
        object.__setattr__(
            self, "num_classes", _check_classes(labels, _num_classes(self.num_classes))
        )

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


def _num_classes(value: Any) -> int:
    """``num_classes`` as given (0: count the labels): one integer, also a 0-d array from .npz."""
    if isinstance(value, np.ndarray):
        if value.ndim != 0:
            raise TypeError(
                f"data: num_classes must be one integer, got an array of shape {value.shape}"
            )
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"data: num_classes must be an integer, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"data: num_classes must be >= 0 (0: count the labels), got {value}")
    return int(value)


def _check_classes(labels: list[np.ndarray], num_classes: int) -> int:
    """The number of classes K; the labels must be 0..K-1 and K at most the training samples.

    The bound keeps a stray label (10**7) from making a classifier of ten million
    classes; without ``num_classes``, every class 0..K-1 must occur somewhere.
    """
    top = max(int(y.max()) for y in labels)
    n_train = len(labels[0])
    if num_classes and top >= num_classes:
        raise ValueError(f"data: labels go up to {top} but num_classes={num_classes}")
    k = num_classes or top + 1
    if k > n_train:
        given = f"num_classes={k}" if num_classes else f"labels up to {top}, so {k} classes,"
        raise ValueError(
            f"data: {given} but only {n_train} training samples; class labels must be "
            "0..K-1 with K at most the number of training samples"
        )
    if not num_classes:
        unused = np.setdiff1d(np.arange(k), np.unique(np.concatenate(labels)))
        if len(unused):
            raise ValueError(
                f"data: the labels are not 0..{k - 1}: {len(unused)} of those classes never "
                f"occur (e.g. {', '.join(str(v) for v in unused[:5])}); number the classes "
                "0..K-1 or pass num_classes"
            )
    if k < 2:
        raise ValueError(f"data: need at least 2 classes, got {k}")
    return k


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
    if len(y):  # range before the cast: 1e30 or 2**64-1 must not wrap to another number
        if y.min() < 0:
            raise ValueError(f"data: {name} has negative labels (the smallest is {y.min()})")
        if y.max() > MAX_LABEL:
            raise ValueError(
                f"data: {name} holds the label {y.max():g}, not a class index (labels are "
                "0..K-1 with K at most the number of training samples)"
            )
    return y.astype(np.int64)
