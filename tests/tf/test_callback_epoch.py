"""ncap.keras.BetaEff, epoch protocol: beta of a pass over the training data after each epoch."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
from support.tf_helpers import MLP_LAYERS, batch_betas, compiled, data, fit_data, mlp, probe_model

from ncap.keras import BetaEff

PASS_BATCH = 16


def test_epoch_value_is_the_mean_over_batches_of_the_inference_beta():
    """After each epoch: batches of batch_size (the last one shorter), inference mode (no
    dropout, moving statistics), the mean of the batch betas, in logs["beta_eff_epoch"]."""
    model = compiled(probe_model(dtype="float64"), lr=0.05)
    x, y = fit_data(40)
    seen = []
    at_epoch_end = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: seen.append(
            np.mean(batch_betas(model, x, y, PASS_BATCH, training=False))
        )
    )
    cb = BetaEff(protocol="epoch", data=(x, y), batch_size=PASS_BATCH)
    hist = model.fit(x, y, batch_size=8, epochs=2, callbacks=[cb, at_epoch_end], verbose=0)
    np.testing.assert_allclose(hist.history["beta_eff_epoch"], seen, rtol=1e-12)
    assert seen[0] != pytest.approx(seen[1], rel=1e-6)  # the model moved between the passes
    assert cb.pass_values == hist.history["beta_eff_epoch"] and len(cb.pass_seconds) == 2
    assert "beta_eff" not in hist.history and cb.step_values == [] and cb.epoch_values == []


def test_sample_reduction_and_named_layers():
    model = compiled(mlp("gelu", dtype="float64"))
    x, y = fit_data(24)
    cb = BetaEff(
        reduction="sample", layers=MLP_LAYERS, protocol="epoch", data=(x, y), batch_size=PASS_BATCH
    )
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[cb], verbose=0)
    per_batch = batch_betas(
        model, x, y, PASS_BATCH, training=False, layers=MLP_LAYERS, reduction="sample"
    )
    np.testing.assert_allclose(cb.pass_values, [np.mean(per_batch)], rtol=1e-12)


def _fit(callbacks):
    """A probe with dropout and BatchNorm, Adam, shuffled batches: everything training touches."""
    x, y = data(n=48, seed=2)
    model = probe_model(seed=3)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    keras.utils.set_random_seed(0)
    hist = model.fit(x, y, batch_size=8, epochs=3, shuffle=True, callbacks=callbacks, verbose=0)
    return model, hist.history


def _assert_same_training(a, b):
    (ma, ha), (mb, hb) = a, b
    assert ha["loss"] == hb["loss"]
    # Weights, BatchNorm moving statistics, dropout random-generator states, optimizer state.
    pairs = zip(
        ma.variables + ma.optimizer.variables, mb.variables + mb.optimizer.variables, strict=True
    )
    for va, vb in pairs:
        np.testing.assert_array_equal(va.numpy(), vb.numpy(), err_msg=va.path)


def test_the_pass_leaves_training_unchanged():
    """Fits with the same seed give identical training with and without the pass."""
    x, y = data(n=48, seed=2)
    plain = _fit([])
    epoch = _fit([BetaEff(protocol="epoch", data=(x, y), batch_size=PASS_BATCH)])
    _assert_same_training(plain, epoch)
    step = _fit([BetaEff()])
    both = _fit([BetaEff(protocol="both", data=(x, y), batch_size=PASS_BATCH)])
    _assert_same_training(step, both)
    assert both[1]["beta_eff"] == step[1]["beta_eff"]  # both protocols side by side
    assert both[1]["beta_eff_epoch"] == epoch[1]["beta_eff_epoch"]
    assert len(both[1]["beta_eff_epoch"]) == 3 and np.all(np.isfinite(both[1]["beta_eff_epoch"]))


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(protocol="batch"), ValueError, "protocol"),
        (dict(protocol="epoch"), ValueError, "data"),
        (dict(protocol="both"), ValueError, "data"),
        (dict(data="XY"), ValueError, "only the epoch protocol"),
        (dict(protocol="epoch", data=[np.zeros((4, 6))]), TypeError, "pair"),
        (dict(protocol="epoch", data=(np.zeros((4, 6)), np.zeros(3))), ValueError, "same number"),
        (dict(protocol="epoch", data=(np.zeros((0, 6)), np.zeros(0))), ValueError, "no samples"),
        (
            dict(protocol="epoch", data=(np.zeros((4, 6)), np.zeros(4)), batch_size=0),
            ValueError,
            "batch_size",
        ),
        (
            dict(protocol="epoch", data=(np.zeros((4, 6)), np.zeros(4)), threads=-1),
            ValueError,
            "threads",
        ),
    ],
)
def test_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        BetaEff(**kwargs)


def test_the_epoch_protocol_refuses_a_probe_the_closed_form_cannot_handle():
    inp = keras.Input((6,))
    h = keras.layers.Dense(5, name="d0")(inp)
    h = keras.layers.LayerNormalization()(h)
    h = keras.layers.Dense(4, activation="relu", name="d1")(h)
    h = keras.layers.Dense(4, activation="relu", name="d2")(h)
    model = compiled(keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="o")(h)))
    x, y = data(n=8)
    cb = BetaEff(layers=["d0", "d1", "d2", "o"], protocol="epoch", data=(x, y))
    with pytest.raises(ValueError, match="needs the closed form.*LayerNormalization"):
        model.fit(x, y, epochs=1, callbacks=[cb], verbose=0)
