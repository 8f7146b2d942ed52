"""Target datasets for ``ncap.select``: an ``.npz`` file, an image directory, or arrays.

A :class:`Dataset` holds the three splits ncap needs: training data for
fine-tuning (and LogME), validation data for the per-epoch accuracies the
predictors read, and test data for the true final accuracy in evaluation mode.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_SPLITS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


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
        seen = int(max(int(y.max()) for y in (self.y_train, self.y_val, self.y_test)
                       if y is not None)) + 1
        if self.num_classes == 0:
            object.__setattr__(self, "num_classes", seen)
        elif seen > self.num_classes:
            raise ValueError(
                f"data: labels go up to {seen - 1} but num_classes={self.num_classes}"
            )
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


def load_npz(path: str | os.PathLike[str]) -> Dataset:
    """Load an ``.npz`` holding x_train, y_train, x_val, y_val and optionally x_test, y_test."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"data: no such file {path!r}")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as err:  # zip or format errors: say which file
        raise ValueError(f"data: cannot read {path!r} as .npz: {err}") from err
    missing = [k for k in _SPLITS[:4] if k not in arrays]
    if missing:
        raise ValueError(
            f"data: {path!r} lacks {missing}; an .npz needs {list(_SPLITS)} "
            "(x_test/y_test optional without truth)"
        )
    num_classes = int(arrays["num_classes"]) if "num_classes" in arrays else 0
    return Dataset(
        **{k: arrays.get(k) for k in _SPLITS}, num_classes=num_classes,
        name=os.path.basename(path),
    )


def load_image_directory(
    path: str | os.PathLike[str],
    *,
    image_size: tuple[int, int] = (224, 224),
    color_mode: str = "rgb",
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """Load a directory with one sub-directory per class (Keras' loader).

    If ``path`` holds ``train/``, ``val/`` (or ``validation/``) and optionally
    ``test/`` sub-directories, those are the splits; otherwise the images are
    split at random (stratified) by ``val_fraction`` and ``test_fraction``.
    Pixel values are left in 0..255 as Keras' loader yields them.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(f"data: no such directory {path!r}")
    import keras

    def load(d: str, class_names: list[str] | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        ds = keras.utils.image_dataset_from_directory(
            d, labels="inferred", label_mode="int", class_names=class_names,
            color_mode=color_mode, image_size=image_size, shuffle=False, batch_size=None,
            verbose=False,
        )
        names = list(ds.class_names)
        xs, ys = [], []
        for x, y in ds.as_numpy_iterator():
            xs.append(x)
            ys.append(y)
        if not xs:
            raise ValueError(f"data: no images found in {d!r}")
        return np.stack(xs).astype(np.float32), np.asarray(ys, np.int64), names

    subdirs = {s for s in os.listdir(path) if os.path.isdir(os.path.join(path, s))}
    val_dir = "val" if "val" in subdirs else "validation" if "validation" in subdirs else None
    if "train" in subdirs and val_dir:
        x_tr, y_tr, names = load(os.path.join(path, "train"), None)
        x_va, y_va, _ = load(os.path.join(path, val_dir), names)
        x_te = y_te = None
        if "test" in subdirs:
            x_te, y_te, _ = load(os.path.join(path, "test"), names)
    else:
        x, y, names = load(path, None)
        from sklearn.model_selection import train_test_split

        if (not 0 < val_fraction < 1 or not 0 <= test_fraction < 1
                or val_fraction + test_fraction >= 1):
            raise ValueError(
                "data: val_fraction and test_fraction must be in (0, 1) and sum below 1")
        x_te = y_te = None
        if test_fraction > 0:
            x, x_te, y, y_te = train_test_split(
                x, y, test_size=test_fraction, stratify=y, random_state=seed
            )
        x_tr, x_va, y_tr, y_va = train_test_split(
            x, y, test_size=val_fraction / (1 - test_fraction), stratify=y, random_state=seed
        )
    return Dataset(x_tr, y_tr, x_va, y_va, x_te, y_te, num_classes=len(names),
                   name=os.path.basename(os.path.normpath(path)), info={"class_names": names})


def resolve_data(data: Any, **options: Any) -> Dataset:
    """Turn what the user gave into a :class:`Dataset`.

    Accepts a :class:`Dataset`; a mapping with the six split arrays; a path to an
    ``.npz`` file or an image directory; or ``None`` / ``"example"`` for the
    built-in digits example's target task (:mod:`ncap.example`).
    """
    if isinstance(data, Dataset):
        return data
    if data is None or (isinstance(data, str) and data == "example"):
        from .example import target_dataset

        return target_dataset()
    if isinstance(data, dict):
        unknown = set(data) - set(_SPLITS) - {"num_classes", "name"}
        if unknown:
            raise ValueError(f"data: unknown keys {sorted(unknown)}; expected {list(_SPLITS)}")
        missing = [k for k in _SPLITS[:4] if k not in data]
        if missing:
            raise ValueError(f"data: missing {missing}")
        return Dataset(**{k: data.get(k) for k in _SPLITS},
                       num_classes=int(data.get("num_classes", 0)),
                       name=str(data.get("name", "arrays")))
    if isinstance(data, (str, os.PathLike)):
        p = os.fspath(data)
        if os.path.isdir(p):
            return load_image_directory(p, **options)
        if p.endswith(".npz") or os.path.isfile(p):
            return load_npz(p)
        raise ValueError(f"data: {p!r} is neither an .npz file nor an image directory")
    raise TypeError(
        "data: expected a path (.npz or image directory), a dict of arrays, an ncap Dataset "
        f"or 'example', got {type(data).__name__}"
    )
