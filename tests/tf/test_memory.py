"""The TensorFlow paths keep nothing alive: models die with their last reference, and repeated
use (per step, per epoch, per fit, per new model) does not grow the process.

RSS is measured with psutil around a loop, after a warm-up; the bounds leave room for
TensorFlow's and the allocator's own movement, not for a retained model (~2 MiB each here)
or a retraced training step (~4 MiB per fit here).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import gc
import weakref

import keras
import numpy as np
import psutil
import pytest
from sklearn.datasets import load_digits
from support.tf_helpers import data, probe_model

import ncap
from ncap.keras import BetaEff

MB = 1024 * 1024
PROCESS = psutil.Process()


def _rss() -> int:
    gc.collect()
    return PROCESS.memory_info().rss


def _growth(call, n_calls: int, warmup: int) -> float:
    for _ in range(warmup):
        call()
    before = _rss()
    for _ in range(n_calls):
        call()
    return (_rss() - before) / MB


@pytest.fixture(scope="module")
def digits_model():
    digits = load_digits()
    x = (digits.data[:64] / 16.0).astype(np.float32)
    y = digits.target[:64]
    inputs = keras.Input(shape=(64,))
    features = keras.layers.Dense(32, activation="relu", name="features")(inputs)
    model = ncap.attach_probe(keras.Model(inputs, features), 10, hidden=(32, 16, 16), seed=0)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return model, x, y


def test_capture_and_model_beff_do_not_grow_rss(digits_model):
    """100 ncap.capture (+ ncap.beff on it) and 100 ncap.beff(model, x, y) calls: RSS stays flat."""
    model, x, y = digits_model

    def capture_then_beff():
        cap = ncap.capture(model, x, y)
        ncap.beff(cap.acts, cap.derivs, cap.grads)

    # A leaked capture (z, s, g of 64 samples) or a graph traced per call would exceed this.
    growth = _growth(capture_then_beff, 100, warmup=20)
    assert growth < 10, f"RSS grew by {growth:.1f} MB over 100 ncap.capture calls"
    growth = _growth(lambda: ncap.beff(model, x, y), 100, warmup=20)
    assert growth < 10, f"RSS grew by {growth:.1f} MB over 100 ncap.beff(model, x, y) calls"


def _small_model():
    model = probe_model()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return model


def _use_beff(model, x, y):
    ncap.beff(model, x, y)
    ncap.beff(model, x, y, method="autodiff", compiled=True)


def _use_capture(model, x, y):
    ncap.capture(model, x, y, training=True)


def _use_fit(model, x, y, **kw):
    cb = BetaEff(**kw)
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[cb], verbose=0)
    assert len(cb.step_values) == 2 or len(cb.pass_values) == 1
    return cb


def _use_fit_epoch_protocol(model, x, y):
    return _use_fit(model, x, y, protocol="epoch", data=(x, y))


def _collect():
    gc.collect()
    keras.backend.clear_session()
    gc.collect()


@pytest.mark.parametrize(
    "use",
    [_use_beff, _use_capture, _use_fit, _use_fit_epoch_protocol],
    ids=["beff", "capture", "fit", "fit-epoch-protocol"],
)
def test_a_model_ncap_used_dies_with_its_last_reference(use):
    model = _small_model()
    x, y = data(n=16)
    kept = use(model, x, y)  # what the user keeps (the callback, with its values)
    ref = weakref.ref(model)
    del model
    _collect()
    assert ref() is None, "ncap keeps the model alive"
    if kept is not None:
        assert kept.model is None


@pytest.mark.slow
def test_new_models_grow_rss_no_more_than_plain_keras():
    """30 new small models used by ncap.beff and ncap.capture grow RSS within a few MB of 30
    plain Keras models that trace a predict function each."""
    x, y = data(n=16)

    def plain():
        _small_model().predict(x, verbose=0)
        keras.backend.clear_session()

    def used():
        model = _small_model()
        ncap.beff(model, x, y)
        ncap.capture(model, x, y)
        keras.backend.clear_session()

    for _ in range(2):  # warm up both before measuring either
        plain()
        used()
    keras_growth = _growth(plain, 30, warmup=0)
    ncap_growth = _growth(used, 30, warmup=0)
    # RSS can also fall (memory of earlier tests returned): compare with no growth at least.
    assert ncap_growth < max(keras_growth, 0.0) + 15, (
        f"30 models: RSS grew by {ncap_growth:.1f} MB with ncap, {keras_growth:.1f} MB without"
    )


def test_a_new_callback_per_fit_does_not_retrace_the_step():
    """A new BetaEff for each fit on the same compiled model reuses the traced step: RSS stays
    flat (a retrace costs a few MB per fit)."""
    model = _small_model()
    x, y = data(n=32)

    def fit():
        cb = BetaEff()
        model.fit(x, y, batch_size=8, epochs=1, callbacks=[cb], verbose=0)
        assert len(cb.step_values) == 4

    growth = _growth(fit, 12, warmup=3)
    assert growth < 12, f"RSS grew by {growth:.1f} MB over 12 fits, each with a new BetaEff"
