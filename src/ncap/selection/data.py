"""Target datasets for ``ncap.select``: an ``.npz`` file, an image directory, or arrays.

A :class:`~ncap.selection.dataset.Dataset` holds the three splits ncap needs: training data for
fine-tuning (and LogME), validation data for the per-epoch accuracies the
predictors read, and test data for the true final accuracy in evaluation mode.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .dataset import SPLITS, Dataset


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
    missing = [k for k in SPLITS[:4] if k not in arrays]
    if missing:
        raise ValueError(
            f"data: {path!r} lacks {missing}; an .npz needs {list(SPLITS)} "
            "(x_test/y_test optional without truth)"
        )
    return Dataset(
        **{k: arrays.get(k) for k in SPLITS},
        num_classes=arrays.get("num_classes", 0),  # Dataset checks it (a 0-d array from .npz)
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
            d,
            labels="inferred",
            label_mode="int",
            class_names=class_names,
            color_mode=color_mode,
            image_size=image_size,
            shuffle=False,
            batch_size=None,
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

        if (
            not 0 < val_fraction < 1
            or not 0 <= test_fraction < 1
            or val_fraction + test_fraction >= 1
        ):
            raise ValueError(
                "data: val_fraction and test_fraction must be in (0, 1) and sum below 1"
            )
        x_te = y_te = None
        if test_fraction > 0:
            x, x_te, y, y_te = train_test_split(
                x, y, test_size=test_fraction, stratify=y, random_state=seed
            )
        x_tr, x_va, y_tr, y_va = train_test_split(
            x, y, test_size=val_fraction / (1 - test_fraction), stratify=y, random_state=seed
        )
    return Dataset(
        x_tr,
        y_tr,
        x_va,
        y_va,
        x_te,
        y_te,
        num_classes=len(names),
        name=os.path.basename(os.path.normpath(path)),
        info={"class_names": names},
    )


def resolve_data(data: Any, **options: Any) -> Dataset:
    """Turn what the user gave into a :class:`Dataset`.

    Accepts a :class:`Dataset`; a mapping with the six split arrays; a path to an
    ``.npz`` file or an image directory; or ``None`` / ``"example"`` for the
    built-in digits example's target task (:mod:`ncap.example`).
    """
    if isinstance(data, Dataset):
        return data
    if data is None or (isinstance(data, str) and data == "example"):
        from .example import target_dataset  # the example module knows its own data

        return target_dataset()
    if isinstance(data, dict):
        unknown = set(data) - set(SPLITS) - {"num_classes", "name"}
        if unknown:
            raise ValueError(f"data: unknown keys {sorted(unknown)}; expected {list(SPLITS)}")
        missing = [k for k in SPLITS[:4] if k not in data]
        if missing:
            raise ValueError(f"data: missing {missing}")
        return Dataset(
            **{k: data.get(k) for k in SPLITS},
            num_classes=data.get("num_classes", 0),
            name=str(data.get("name", "arrays")),
        )
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
