"""ncap.keras.BetaEff hooks into fit only, and Keras' own training step is back afterwards."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from support.tf_helpers import batch_betas, compiled, data, fit_data, probe_model

from ncap.keras import BetaEff
from ncap.tf.fit_hook import GuardedTrainFunction

BATCH = 8


class _RaiseAtBatch(keras.callbacks.Callback):
    """Makes fit raise when the given batch begins."""

    def __init__(self, batch: int) -> None:
        super().__init__()
        self.batch = batch

    def on_train_batch_begin(self, batch, logs=None):
        if batch == self.batch:
            raise RuntimeError("fit interrupted")


def _keras_step_is_back(model) -> bool:
    return "train_step" not in vars(model) and not isinstance(
        model.train_function, GuardedTrainFunction
    )


def test_evaluate_and_predict_with_the_callback_do_not_touch_the_model():
    model = compiled(probe_model(), lr=0.01)
    x, y = data(n=16)
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    keras_function = model.train_function
    cb = BetaEff()
    model.evaluate(x, y, batch_size=BATCH, callbacks=[cb], verbose=0)
    model.predict(x, batch_size=BATCH, callbacks=[cb], verbose=0)
    assert model.train_function is keras_function and "train_step" not in vars(model)
    hist = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert "beta_eff" not in hist.history and cb.step_values == []


def test_a_fit_that_raises_leaves_keras_step_for_the_next_fit():
    """After a fit with the callback raised (no on_train_end), the next plain fit runs Keras' own
    step, trains exactly as a model that never saw the callback, and records nothing."""
    x, y = data(n=32, seed=3)
    a, b = probe_model(seed=3, dropout=0.0), probe_model(seed=3, dropout=0.0)
    b.set_weights(a.get_weights())
    compiled(a, lr=0.1)
    compiled(b, lr=0.1)
    cb = BetaEff()
    for model, callbacks in ((a, [cb, _RaiseAtBatch(2)]), (b, [_RaiseAtBatch(2)])):
        with pytest.raises(RuntimeError, match="fit interrupted"):
            model.fit(
                x, y, batch_size=BATCH, epochs=1, shuffle=False, callbacks=callbacks, verbose=0
            )
    ha = a.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    hb = b.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    assert _keras_step_is_back(a)
    assert "beta_eff" not in ha.history
    np.testing.assert_array_equal(ha.history["loss"], hb.history["loss"])
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    # The same callback records again in the next fit that has it.
    hist = a.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, callbacks=[cb], verbose=0)
    assert len(cb.step_values) == 4 and np.isfinite(hist.history["beta_eff"][0])
    assert _keras_step_is_back(a)


def test_a_custom_loop_that_never_sets_params_records_beta():
    """A training loop driving the callbacks itself (no set_params, train_on_batch) works."""
    model = compiled(probe_model(dtype="float64", dropout=0.0))
    x, y = fit_data(2 * BATCH)
    cb = BetaEff()
    callbacks = keras.callbacks.CallbackList([cb], model=model)
    callbacks.on_train_begin()
    callbacks.on_epoch_begin(0)
    for i in range(2):
        callbacks.on_train_batch_begin(i)
        model.train_on_batch(x[i * BATCH : (i + 1) * BATCH], y[i * BATCH : (i + 1) * BATCH])
    callbacks.on_epoch_end(0, {})
    callbacks.on_train_end()
    expected = batch_betas(model, x, y, BATCH)
    np.testing.assert_allclose(cb.step_values, expected, rtol=1e-9)
    assert cb.epoch_values == [pytest.approx(np.mean(expected), rel=1e-9)]
    assert _keras_step_is_back(model)


def test_on_train_begin_without_a_model_says_so():
    with pytest.raises(RuntimeError, match="no model"):
        BetaEff().on_train_begin()


def test_two_callbacks_in_one_fit_are_refused():
    model = compiled(probe_model())
    x, y = data(n=8)
    first = BetaEff()
    with pytest.raises(ValueError, match="two BetaEff"):
        model.fit(x, y, epochs=1, callbacks=[first, BetaEff(every=2)], verbose=0)
    hist = model.fit(x, y, epochs=1, verbose=0)
    assert "beta_eff" not in hist.history and _keras_step_is_back(model)


def test_a_recompiled_model_gets_a_new_step_with_its_new_metrics():
    model = compiled(probe_model(dtype="float64", dropout=0.0))
    x, y = fit_data(16)
    model.fit(x, y, batch_size=BATCH, epochs=1, callbacks=[BetaEff()], verbose=0)
    compiled(model, metrics=["accuracy"])
    cb = BetaEff()
    hist = model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, callbacks=[cb], verbose=0)
    assert "accuracy" in hist.history
    np.testing.assert_allclose(cb.step_values, batch_betas(model, x, y, BATCH), rtol=1e-9)
