"""The built-in example: transfer from digits 0-4 to digits 5-9 (scikit-learn's digits).

Nothing can be downloaded, so ncap makes its own pre-trained backbones: a pool
of small CNNs and MLPs that differ in width, depth, activation, length of
pre-training and the source classes they were pre-trained on. Each is
pre-trained here on the source task (8x8 digits of classes 0-4, or a part of
them) and cached on disk; the target task is digits 5-9 (relabelled 0-4),
which no backbone saw during pre-training.

Candidates are named ``"example:NAME"`` (see :data:`POOL`), so a Dask worker
resolves one from its name alone, pre-training it if its cache lacks it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .dataset import Dataset

#: Bump when the pool, the pre-training or the target split change (invalidates caches).
EXAMPLE_VERSION = 2
#: Run settings of the built-in example (used when an argument is not given): 10
#: observed epochs (k = 5 from a t0 chosen by BIC_z, as the paper's protocol), batch 32
#: (17 steps per epoch on 537 training images), truth at epoch 30: the quick default, so
#: that ``ncap select`` stays under 4 minutes on 2 cores; ``--truth-epochs 50`` is the
#: paper's T (docs/EVALUATION.md).
SETTINGS = {"epochs": 10, "truth_epochs": 30, "batch_size": 32}
#: Classes of the target task (relabelled 0..4); the source task uses the others.
TARGET_CLASSES = (5, 6, 7, 8, 9)
SOURCE_CLASSES = (0, 1, 2, 3, 4)
#: Fractions of each target class for training, validation and test data.
SPLIT = (0.6, 0.2, 0.2)


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone of the example pool: architecture and how it is pre-trained."""

    name: str
    kind: str  # "cnn" or "mlp"
    widths: tuple[int, ...]  # conv filters or dense units per layer
    activation: str = "relu"
    source_classes: tuple[int, ...] = SOURCE_CLASSES
    pretrain_epochs: int = 20  # 0: random initialisation, no pre-training
    seed: int = 0
    description: str = ""

    def key(self) -> str:
        """Cache key: changes whenever anything that shapes the weights changes."""
        import keras

        blob = json.dumps([asdict(self), EXAMPLE_VERSION, keras.__version__], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


#: The example pool: 12 backbones spanning architecture (CNN/MLP, width, depth,
#: activation) and pre-training (none, 1 epoch, 20 epochs, other source classes).
#: Fixed before any predictor was run on it (docs/EVALUATION.md), never chosen by
#: how well any predictor ranks it.
POOL: tuple[BackboneSpec, ...] = (
    BackboneSpec("cnn-wide", "cnn", (32, 64), description="CNN 32-64 filters, 20 epochs on 0-4"),
    BackboneSpec("cnn-narrow", "cnn", (4, 8), description="CNN 4-8 filters, 20 epochs on 0-4"),
    BackboneSpec(
        "cnn-deep", "cnn", (16, 32, 64), description="CNN 16-32-64 filters, 20 epochs on 0-4"
    ),
    BackboneSpec(
        "cnn-tanh",
        "cnn",
        (16, 32),
        activation="tanh",
        description="CNN 16-32 filters tanh, 20 epochs on 0-4",
    ),
    BackboneSpec(
        "cnn-brief",
        "cnn",
        (32, 64),
        pretrain_epochs=1,
        description="CNN 32-64 filters, 1 epoch of pre-training",
    ),
    BackboneSpec(
        "cnn-scratch",
        "cnn",
        (32, 64),
        pretrain_epochs=0,
        description="CNN 32-64 filters, random initialisation",
    ),
    BackboneSpec(
        "cnn-two-classes",
        "cnn",
        (32, 64),
        source_classes=(0, 1),
        description="CNN 32-64 filters, 20 epochs on digits 0-1 only",
    ),
    BackboneSpec("mlp-wide", "mlp", (256, 128), description="MLP 256-128 ReLU, 20 epochs on 0-4"),
    BackboneSpec(
        "mlp-tanh", "mlp", (32,), activation="tanh", description="MLP 32 tanh, 20 epochs on 0-4"
    ),
    BackboneSpec(
        "mlp-deep-sigmoid",
        "mlp",
        (64, 64, 64, 64),
        activation="sigmoid",
        description="MLP 4x64 sigmoid, 20 epochs on 0-4",
    ),
    BackboneSpec(
        "mlp-brief",
        "mlp",
        (256, 128),
        pretrain_epochs=1,
        description="MLP 256-128 ReLU, 1 epoch of pre-training",
    ),
    BackboneSpec(
        "mlp-scratch",
        "mlp",
        (256, 128),
        pretrain_epochs=0,
        description="MLP 256-128 ReLU, random initialisation",
    ),
)
POOL_BY_NAME = {s.name: s for s in POOL}


def candidates() -> list[str]:
    """Candidate names of the whole pool, as ``ncap.select`` takes them."""
    return [f"example:{s.name}" for s in POOL]


def cache_dir() -> str:
    """Where pre-trained backbones are kept: ``$NCAP_CACHE`` or ``~/.cache/ncap``."""
    root = os.environ.get("NCAP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "ncap")
    return os.path.join(root, f"example-v{EXAMPLE_VERSION}")


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]  # (1797, 8, 8, 1) in [0, 1]
    return x, d.target.astype(np.int64)


def source_data(classes: tuple[int, ...] = SOURCE_CLASSES) -> tuple[np.ndarray, np.ndarray]:
    """Images and labels (relabelled 0..len(classes)-1) of the source task."""
    if set(classes) & set(TARGET_CLASSES):
        raise ValueError(f"source classes {classes} overlap the target classes {TARGET_CLASSES}")
    x, y = _digits()
    keep = np.isin(y, classes)
    relabel = {c: i for i, c in enumerate(classes)}
    return x[keep], np.array([relabel[int(v)] for v in y[keep]], np.int64)


def target_dataset(
    n_train_per_class: int | None = None, n_val_per_class: int | None = None, seed: int = 0
) -> Dataset:
    """Digits 5-9 relabelled 0-4, split per class into training, validation and test data.

    By default each class is split 60/20/20 (:data:`SPLIT`): 537 training, 179
    validation and 180 test images, so that an epoch at batch 32 has 17 steps
    (the epoch-mean beta_eff is a mean over many batches, as in the paper's
    regime). ``n_train_per_class`` / ``n_val_per_class`` take that many images
    of each class instead (the rest is test data): small splits for tests.
    """
    x, y = _digits()
    keep = np.isin(y, TARGET_CLASSES)
    x, y = x[keep], y[keep] - min(TARGET_CLASSES)
    rng = np.random.default_rng(seed)
    tr, va, te = [], [], []
    for c in range(len(TARGET_CLASSES)):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_tr = round(SPLIT[0] * len(idx)) if n_train_per_class is None else n_train_per_class
        n_va = round(SPLIT[1] * len(idx)) if n_val_per_class is None else n_val_per_class
        if n_tr < 1 or n_va < 1 or n_tr + n_va >= len(idx):
            raise ValueError(
                f"n_train_per_class={n_tr} and n_val_per_class={n_va} must be >= 1 and leave "
                f"test images of class {c} ({len(idx)} images)"
            )
        tr.append(idx[:n_tr])
        va.append(idx[n_tr : n_tr + n_va])
        te.append(idx[n_tr + n_va :])
    tr, va, te = (rng.permutation(np.concatenate(i)) for i in (tr, va, te))
    return Dataset(
        x[tr],
        y[tr],
        x[va],
        y[va],
        x[te],
        y[te],
        num_classes=len(TARGET_CLASSES),
        name="digits 5-9 (built-in example)",
        info={"source_classes": list(SOURCE_CLASSES), "target_classes": list(TARGET_CLASSES)},
    )


def build_backbone(spec: BackboneSpec) -> Any:
    """A fresh (untrained) backbone: 8x8x1 images in, a flat feature vector out."""
    import keras

    inp = keras.Input((8, 8, 1), name="image")
    h = inp
    if spec.kind == "cnn":
        for i, f in enumerate(spec.widths):
            h = keras.layers.Conv2D(
                f, 3, padding="same", activation=spec.activation, name=f"conv{i + 1}"
            )(h)
            if i == 0:
                h = keras.layers.MaxPooling2D(2, name="pool")(h)
        h = keras.layers.Flatten(name="features")(h)
    elif spec.kind == "mlp":
        h = keras.layers.Flatten(name="flatten")(h)
        for i, w in enumerate(spec.widths):
            h = keras.layers.Dense(w, activation=spec.activation, name=f"dense{i + 1}")(h)
    else:
        raise ValueError(f"unknown backbone kind {spec.kind!r}")
    return keras.Model(inp, h, name=spec.name.replace("-", "_"))


def pretrain(spec: BackboneSpec) -> Any:
    """Build the backbone and pre-train it with a softmax head on its source classes."""
    import keras

    from .seeding import seeded

    with seeded(spec.seed):
        backbone = build_backbone(spec)
        if spec.pretrain_epochs > 0:
            x, y = source_data(spec.source_classes)
            head = keras.layers.Dense(len(spec.source_classes), activation="softmax", name="head")
            model = keras.Sequential([backbone, head])
            model.compile(
                optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy"
            )
            model.fit(x, y, batch_size=32, epochs=spec.pretrain_epochs, verbose=0, shuffle=True)
    return backbone


def load_backbone(name: str, *, cache: str | None = None) -> Any:
    """The pre-trained backbone ``name`` of :data:`POOL`, from the cache or pre-trained now."""
    import keras

    if name not in POOL_BY_NAME:
        raise ValueError(f"unknown example backbone {name!r}; the pool has {sorted(POOL_BY_NAME)}")
    spec = POOL_BY_NAME[name]
    cache = cache or cache_dir()
    path = os.path.join(cache, f"{spec.name}-{spec.key()}.keras")
    if os.path.isfile(path):
        try:
            return keras.models.load_model(path, compile=False)
        except Exception:  # a corrupt cache entry is rebuilt, not fatal
            pass
    backbone = pretrain(spec)
    os.makedirs(cache, exist_ok=True)
    # Write then rename, so parallel workers never read a half-written file.
    fd, tmp = tempfile.mkstemp(suffix=".keras", dir=cache)
    os.close(fd)
    try:
        backbone.save(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return backbone
