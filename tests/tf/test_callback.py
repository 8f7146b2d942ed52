"""ncap.keras.BetaEff, step protocol: beta_eff from the training step's own forward pass."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from support.tf_helpers import (
    MLP_LAYERS,
    batch_betas,
    compiled,
    conv_backbone,
    data,
    dense_backbone,
    fit_data,
    mlp,
    probe_model,
)

import ncap
from ncap.keras import BetaEff

BATCH = 8


def _expected(model, x, y, **kw):
    """beta of each batch in order, recomputed with ncap.beff (training mode: batch statistics)."""
    return batch_betas(model, x, y, BATCH, **kw)


@pytest.mark.parametrize(
    "compile_kw",
    [
        pytest.param({}, id="tf.function"),
        pytest.param({"steps_per_execution": 3}, id="steps_per_execution=3"),
        pytest.param({"run_eagerly": True}, id="eager"),
        pytest.param({"jit_compile": True}, id="xla", marks=pytest.mark.slow),  # 20 s of XLA
    ],
)
def test_records_every_step_from_the_training_step(compile_kw):
    # lr = 0 keeps the weights fixed, so each step's beta can be recomputed afterwards.
    model = compiled(probe_model(dtype="float64", dropout=0.0), **compile_kw)
    x, y = fit_data(40)
    cb = BetaEff()
    hist = model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, callbacks=[cb], verbose=0)
    expected = _expected(model, x, y)
    assert len(cb.step_values) == 10 and cb.step_indices == list(range(10))
    np.testing.assert_allclose(cb.step_values, expected * 2, rtol=1e-9)
    np.testing.assert_allclose(hist.history["beta_eff"], [np.mean(expected)] * 2, rtol=1e-9)
    assert cb.epoch_values == hist.history["beta_eff"]
    assert len(hist.history["loss"]) == 2


def test_every_and_sample_reduction():
    model = compiled(probe_model(dtype="float64", dropout=0.0), steps_per_execution=2)
    x, y = fit_data(40)
    cb = BetaEff(every=3, reduction="sample")
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, callbacks=[cb], verbose=0)
    assert cb.step_indices == [0, 3, 6, 9]
    per_batch = batch_betas(model, x, y, BATCH, reduction="sample")
    expected = [per_batch[s % 5] for s in cb.step_indices]
    np.testing.assert_allclose(cb.step_values, expected, rtol=1e-9)
    np.testing.assert_allclose(
        cb.epoch_values, [np.mean(expected[:2]), np.mean(expected[2:])], rtol=1e-9
    )


def test_named_probe_layers_of_a_user_model():
    model = compiled(mlp("tanh", dtype="float64", dropout=0.0))
    x, y = fit_data(16)
    cb = BetaEff(layers=MLP_LAYERS)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, callbacks=[cb], verbose=0)
    np.testing.assert_allclose(cb.step_values, _expected(model, x, y, layers=MLP_LAYERS), rtol=1e-9)


def test_trainable_probe_layers_are_seen_as_the_forward_pass_saw_them():
    """With trainable Dense and BatchNorm layers in the probe, the recorded beta is beta of the
    batch before the optimizer update (the kernels and scales the forward pass used)."""
    model = compiled(mlp("tanh", dtype="float64", dropout=0.0), lr=0.5)
    x, y = fit_data(BATCH)
    before = float(ncap.beff(model, x, y, training=True, layers=MLP_LAYERS))
    kernel = model.get_layer("d1").kernel.numpy().copy()
    cb = BetaEff(layers=MLP_LAYERS)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, callbacks=[cb], verbose=0)
    assert np.abs(model.get_layer("d1").kernel.numpy() - kernel).max() > 1e-2  # it trained
    after = float(ncap.beff(model, x, y, training=True, layers=MLP_LAYERS))
    assert after != pytest.approx(before, rel=1e-3)
    np.testing.assert_allclose(cb.step_values, [before], rtol=1e-9)


def test_mixed_float16_loss_scale_overflows_do_not_reach_beta():
    """Under the mixed_float16 policy the loss-scale optimizer overflows (and skips the update) in
    the first step; every step's beta is still recorded, finite, and is beta of its batch."""
    policy = keras.config.dtype_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        model = ncap.attach_probe(dense_backbone(), 3, hidden=(7, 6, 5), seed=1, dropout=0.0)
        model.compile(optimizer=keras.optimizers.SGD(0.0), loss="sparse_categorical_crossentropy")
        x, y = data(n=64)
        cb = BetaEff()
        hist = model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, callbacks=[cb], verbose=0)
        initial = model.optimizer.initial_scale
        scale = float(model.optimizer.dynamic_scale.numpy())
        expected = batch_betas(model, x, y, BATCH)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    assert keras.config.dtype_policy().name == policy.name
    assert scale < initial  # the optimizer did overflow
    assert np.all(np.isfinite(cb.step_values)) and np.isfinite(hist.history["beta_eff"][0])
    assert len(cb.step_values) == 8 and cb.skipped_steps == 0
    # float16 activations: the recorded and the recomputed values agree to float16 precision.
    np.testing.assert_allclose(cb.step_values, expected, rtol=5e-2, atol=2e-3)


def test_a_step_with_a_non_finite_beta_is_skipped_and_counted():
    model = compiled(probe_model(dtype="float64", dropout=0.0))
    x, y = fit_data(3 * BATCH)
    expected = batch_betas(model, x, y, BATCH)[:2]
    x[-1, 0] = np.nan  # the last batch's pass is NaN
    cb = BetaEff()
    hist = model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, callbacks=[cb], verbose=0)
    np.testing.assert_allclose(hist.history["beta_eff"], [np.mean(expected)], rtol=1e-9)
    np.testing.assert_allclose(cb.step_values, expected, rtol=1e-9)
    assert cb.skipped_steps == 1 and cb.step_indices == [0, 1]


def _twin_models():
    a = probe_model(dtype="float32", seed=3)
    b = probe_model(dtype="float32", seed=3)
    b.set_weights(a.get_weights())
    return a, b


def test_training_is_unchanged_by_the_callback():
    # Same data, same weights, same dropout streams: with or without the callback, training
    # follows the same path (the callback only adds reads of the step's tensors).
    x, y = data(n=48, seed=2)
    a, b = _twin_models()
    keras.utils.set_random_seed(0)
    compiled(a, lr=0.1)
    ha = a.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, callbacks=[BetaEff()], verbose=0)
    keras.utils.set_random_seed(0)
    compiled(b, lr=0.1)
    hb = b.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-5)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=False):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)
    assert "beta_eff" not in hb.history


def test_plain_fit_after_the_callback_uses_keras_step_again():
    model = compiled(probe_model(dtype="float64", dropout=0.0), lr=0.01)
    x, y = fit_data(16)
    keras_function = model.make_train_function() or model.train_function
    model.fit(x, y, batch_size=BATCH, epochs=1, callbacks=[BetaEff()], verbose=0)
    assert "train_step" not in vars(model) and model.train_function is keras_function
    hist = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert "beta_eff" not in hist.history
    cb = BetaEff()  # and a new callback hooks in again
    hist = model.fit(x, y, batch_size=BATCH, epochs=1, callbacks=[cb], verbose=0)
    assert len(cb.step_values) == 2 and np.isfinite(hist.history["beta_eff"][0])


def test_csv_logger_and_validation_see_beta(tmp_path):
    model = compiled(probe_model(), lr=0.01, metrics=["accuracy"])
    x, y = data(n=32)
    path = tmp_path / "log.csv"
    model.fit(
        x,
        y,
        batch_size=BATCH,
        epochs=2,
        validation_data=(x[:8], y[:8]),
        verbose=0,
        callbacks=[BetaEff(), keras.callbacks.CSVLogger(str(path))],
    )
    header, *rows = path.read_text().strip().splitlines()
    assert "beta_eff" in header.split(",") and "val_accuracy" in header.split(",")
    col = header.split(",").index("beta_eff")
    assert len(rows) == 2 and all(np.isfinite(float(r.split(",")[col])) for r in rows)


def test_conv_backbone_with_dropout_and_batchnorm_trains():
    model = compiled(ncap.attach_probe(conv_backbone(), 3, hidden=(8, 6, 5), seed=1), lr=0.05)
    x = np.random.default_rng(0).normal(size=(32, 8, 8, 1)).astype("float32")
    y = np.random.default_rng(1).integers(0, 3, 32)
    cb = BetaEff()
    hist = model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, callbacks=[cb])
    assert len(cb.step_values) == 8 and np.all(np.isfinite(cb.step_values))
    assert len(hist.history["beta_eff"]) == 2


def test_bad_input():
    with pytest.raises(ValueError, match="every"):
        BetaEff(every=0)
    with pytest.raises(ValueError, match="reduction"):
        BetaEff(reduction="mean")
    x, y = data(n=8, dtype="float64")
    plain = compiled(mlp("relu", dtype="float64"))
    with pytest.raises(ValueError, match="no probe found"):
        plain.fit(x, y, epochs=1, callbacks=[BetaEff()], verbose=0)
    summed = probe_model()
    summed.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(reduction="sum")
    )
    with pytest.raises(ValueError, match="sum_over_batch_size"):
        summed.fit(x, y, epochs=1, callbacks=[BetaEff()], verbose=0)
    shallow = compiled(mlp("relu", dtype="float64", widths=(4, 3)))
    with pytest.raises(ValueError, match="three hidden layers"):
        shallow.fit(x, y, epochs=1, callbacks=[BetaEff(layers=["d0", "d1", "out"])], verbose=0)
    assert "train_step" not in vars(shallow)


def test_probe_the_closed_form_cannot_handle_is_refused():
    inp = keras.Input((6,))
    h = keras.layers.Dense(5, name="d0")(inp)
    h = keras.layers.LayerNormalization()(h)  # couples the units: not elementwise
    h = keras.layers.Dense(4, activation="relu", name="d1")(h)
    h = keras.layers.Dense(4, activation="relu", name="d2")(h)
    model = compiled(keras.Model(inp, keras.layers.Dense(3, activation="softmax", name="o")(h)))
    x, y = data(n=8)
    cb = BetaEff(layers=["d0", "d1", "d2", "o"])
    with pytest.raises(ValueError, match="BetaEff needs the closed form.*LayerNormalization"):
        model.fit(x, y, epochs=1, callbacks=[cb], verbose=0)


_DISTRIBUTED = textwrap.dedent(
    """
    import json, os, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np, ncap
    sys.path.insert(0, os.environ["NCAP_TESTS"])
    from support.tf_helpers import dense_backbone, floatx
    from ncap.keras import BetaEff

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(48, 6)).astype('float32').astype('float64'), rng.integers(0, 3, 48)
    out = {}
    for replicas in (1, 2):
        for batchnorm in (False, True):
            strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
            with strategy.scope(), floatx("float64"):
                model = ncap.attach_probe(dense_backbone(seed=1), 3, hidden=(7, 6, 5), seed=1,
                                          dropout=0.0, batchnorm=batchnorm)
                loss = keras.losses.SparseCategoricalCrossentropy(dtype="float64")
                model.compile(optimizer=keras.optimizers.SGD(0.0), loss=loss)
            cb = BetaEff()
            hist = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, callbacks=[cb],
                             verbose=0)
            whole, halves = [], []
            for i in range(0, 48, 16):
                xb, yb = x[i:i + 16], y[i:i + 16]
                whole.append(float(ncap.beff(model, xb, yb, training=True)))
                # Each replica normalises with its own half's batch statistics: capture the
                # halves and give the kernel all their samples at once.
                caps = [ncap.capture(model, xb[j:j + 8], yb[j:j + 8], training=True)
                        for j in (0, 8)]
                cat = [[np.concatenate(p) for p in zip(*(getattr(c, f) for c in caps))]
                       for f in ("acts", "derivs", "grads")]
                halves.append(float(ncap.beff(*cat)))
            out[f"{replicas}-{batchnorm}"] = dict(steps=cb.step_values, whole=whole,
                                                  halves=halves,
                                                  epoch=hist.history["beta_eff"])
    print("RESULT" + json.dumps(out), flush=True)
    os._exit(0)  # TF's collective executors can crash at interpreter teardown; skip it
    """
)


def test_mirrored_strategy_combines_replicas_exactly():
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "NCAP_TESTS": os.path.dirname(__file__),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    proc = subprocess.run(
        [sys.executable, "-c", _DISTRIBUTED], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT"))
    out = json.loads(line[len("RESULT") :])
    for replicas in (1, 2):
        # Without batch statistics the replicas' forward equals the whole batch's: beta of the
        # global batch.
        r = out[f"{replicas}-False"]
        np.testing.assert_allclose(r["steps"], r["whole"], rtol=1e-9)
        np.testing.assert_allclose(r["epoch"], [np.mean(r["whole"])], rtol=1e-9)
    np.testing.assert_allclose(out["1-True"]["steps"], out["1-True"]["whole"], rtol=1e-9)
    # With BatchNorm, two replicas normalise per half: beta of all the global batch's samples.
    two = out["2-True"]
    np.testing.assert_allclose(two["steps"], two["halves"], rtol=1e-9)
    assert not np.allclose(two["halves"], two["whole"], rtol=1e-6)  # the halves do differ


@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_same_callback_over_several_fits_and_unknown_epoch_length():
    import tensorflow as tf

    model = compiled(probe_model(dtype="float64", dropout=0.0))
    x, y = fit_data(24)
    expected = _expected(model, x, y)
    cb = BetaEff()
    for _ in range(2):  # the second fit reuses the traced step
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, callbacks=[cb], verbose=0)
        np.testing.assert_allclose(cb.step_values, expected, rtol=1e-9)
    # A dataset whose length fit cannot know in advance.
    ds = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda a, b: True).batch(BATCH)
    hist = model.fit(ds, epochs=2, shuffle=False, callbacks=[cb], verbose=0)
    np.testing.assert_allclose(cb.step_values, expected * 2, rtol=1e-9)
    np.testing.assert_allclose(hist.history["beta_eff"], [np.mean(expected)] * 2, rtol=1e-9)


def test_model_with_its_own_train_step_is_refused():
    class Custom(keras.Model):
        def train_step(self, data):
            return super().train_step(data)

    base = probe_model()
    model = Custom(base.input, base.output)
    compiled(model)
    x, y = data(n=8)
    with pytest.raises(ValueError, match="overrides train_step"):
        model.fit(x, y, epochs=1, callbacks=[BetaEff()], verbose=0)
