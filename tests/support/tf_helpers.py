"""Tiny real Keras models shared by the TensorFlow front-end tests."""

from __future__ import annotations

import contextlib

import keras
import numpy as np

import ncap


@contextlib.contextmanager
def floatx(dtype: str):
    """Build layers in ``dtype`` (Keras' float type and dtype policy), then restore both."""
    old, old_policy = keras.config.floatx(), keras.config.dtype_policy()
    keras.config.set_floatx(dtype)
    keras.config.set_dtype_policy(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(old)
        keras.config.set_dtype_policy(old_policy)


def dense_backbone(n_in: int = 6, width: int = 8, activation: str = "tanh", seed: int = 0):
    inp = keras.Input((n_in,))
    out = keras.layers.Dense(
        width, activation=activation, kernel_initializer=keras.initializers.GlorotNormal(seed)
    )(inp)
    return keras.Model(inp, out, name="dense_backbone")


def conv_backbone(shape=(8, 8, 1), filters: int = 4, seed: int = 0):
    inp = keras.Input(shape)
    h = keras.layers.Conv2D(
        filters, 3, activation="relu", kernel_initializer=keras.initializers.GlorotNormal(seed)
    )(inp)
    return keras.Model(inp, h, name="conv_backbone")


def probe_model(dtype: str = "float32", hidden=(7, 6, 5), classes: int = 3, seed: int = 1, **kw):
    with floatx(dtype):
        return ncap.attach_probe(dense_backbone(seed=seed), classes, hidden=hidden, seed=seed, **kw)


def data(n: int = 12, n_in: int = 6, classes: int = 3, seed: int = 0, dtype: str = "float32"):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n_in)).astype(dtype), rng.integers(0, classes, n)


def mlp(
    activation: str,
    dtype: str = "float64",
    batchnorm: bool = True,
    dropout: float = 0.3,
    widths=(7, 6, 5),
    classes: int = 3,
    n_in: int = 6,
    seed: int = 0,
):
    """A user-built Sequential probe (no ncap names) with the given activation."""
    with floatx(dtype):
        layers = [keras.Input((n_in,))]
        for i, w in enumerate(widths):
            layers.append(
                keras.layers.Dense(
                    w, name=f"d{i}", kernel_initializer=keras.initializers.HeNormal(seed + i)
                )
            )
            if batchnorm:
                layers.append(
                    keras.layers.BatchNormalization(
                        momentum=0.9,
                        name=f"bn{i}",
                        gamma_initializer=keras.initializers.RandomUniform(
                            0.5, 1.5, seed=seed + 10 + i
                        ),
                        beta_initializer=keras.initializers.RandomNormal(
                            0, 0.1, seed=seed + 20 + i
                        ),
                        moving_mean_initializer=keras.initializers.RandomNormal(
                            0, 0.2, seed=seed + 30 + i
                        ),
                        moving_variance_initializer=keras.initializers.RandomUniform(
                            0.5, 2.0, seed=seed + 40 + i
                        ),
                    )
                )
            layers.append(keras.layers.Activation(activation, name=f"act{i}"))
            if dropout:
                layers.append(keras.layers.Dropout(dropout, seed=seed + 50 + i, name=f"drop{i}"))
        layers.append(
            keras.layers.Dense(
                classes,
                activation="softmax",
                name="out",
                kernel_initializer=keras.initializers.HeNormal(seed + 99),
            )
        )
        return keras.Sequential(layers, name=f"mlp_{activation}")


MLP_LAYERS = ["d0", "d1", "d2", "out"]


def compiled(model, lr: float = 0.0, **kw):
    """Compile with SGD(lr) and a loss in the model's own float type (Keras' default is float32)."""
    loss = keras.losses.SparseCategoricalCrossentropy(dtype=model.layers[-1].compute_dtype)
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=loss, **kw)
    return model


def fit_data(n: int, **kw):
    """float64 arrays that hold float32 values: fit() hands the model float32 (Keras' floatx), so
    a recomputation on these arrays sees exactly what the training step saw."""
    x, y = data(n=n, **kw)
    return x.astype("float64"), y


def batch_betas(model, x, y, batch: int, **kw) -> list:
    """beta of each batch of (x, y) in order by ncap.beff(model, ...), training mode by default
    (with reduction="sample": each batch's mean of the per-sample betas)."""
    kw.setdefault("training", True)
    return [
        float(np.mean(ncap.beff(model, x[i : i + batch], y[i : i + batch], **kw).value))
        for i in range(0, len(x), batch)
    ]
