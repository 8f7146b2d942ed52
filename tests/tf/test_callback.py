"""ncap.keras.BetaEff: beta_eff from the training step's own forward and backward pass."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from support.tf_helpers import MLP_LAYERS, conv_backbone, data, mlp, probe_model

import ncap
from ncap.keras import BetaEff

BATCH = 8


def _compiled(model, lr=0.0, **kw):
    # A float64 model gets a float64 loss (Keras' default loss computes in float32).
    loss = keras.losses.SparseCategoricalCrossentropy(dtype=model.layers[-1].compute_dtype)
    model.compile(optimizer=keras.optimizers.SGD(lr), loss=loss, **kw)
    return model


def _data(n):
    # fit() hands float arrays to the model in Keras' floatx (float32): use float64 arrays that
    # hold float32 values, so that the recomputation sees exactly what the training step saw.
    x, y = data(n=n)
    return x.astype("float64"), y


def _expected(model, x, y, **kw):
    """beta of each batch in order, recomputed with ncap.beff (training mode: batch statistics)."""
    return [
        float(ncap.beff(model, x[i : i + BATCH], y[i : i + BATCH], training=True, **kw))
        for i in range(0, len(x), BATCH)
    ]


@pytest.mark.parametrize(
    "compile_kw",
    [{}, {"steps_per_execution": 3}, {"run_eagerly": True}],
    ids=["tf.function", "steps_per_execution=3", "eager"],
)
def test_records_every_step_from_the_training_step(compile_kw):
    # lr = 0 keeps the weights fixed, so each step's beta can be recomputed afterwards.
    model = _compiled(probe_model(dtype="float64", dropout=0.0), **compile_kw)
    x, y = _data(40)
    cb = BetaEff()
    hist = model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, callbacks=[cb], verbose=0)
    expected = _expected(model, x, y)
    assert len(cb.step_values) == 10 and cb.step_indices == list(range(10))
    np.testing.assert_allclose(cb.step_values, expected * 2, rtol=1e-9)
    np.testing.assert_allclose(hist.history["beta_eff"], [np.mean(expected)] * 2, rtol=1e-9)
    assert cb.epoch_values == hist.history["beta_eff"]
    assert len(hist.history["loss"]) == 2


def test_every_and_sample_reduction():
    model = _compiled(probe_model(dtype="float64", dropout=0.0), steps_per_execution=2)
    x, y = _data(40)
    cb = BetaEff(every=3, reduction="sample")
    model.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, callbacks=[cb], verbose=0)
    assert cb.step_indices == [0, 3, 6, 9]
    per_batch = [
        float(
            np.mean(
                ncap.beff(
                    model, x[i : i + BATCH], y[i : i + BATCH], training=True, reduction="sample"
                ).value
            )
        )
        for i in range(0, 40, BATCH)
    ]
    expected = [per_batch[s % 5] for s in cb.step_indices]
    np.testing.assert_allclose(cb.step_values, expected, rtol=1e-9)
    np.testing.assert_allclose(
        cb.epoch_values, [np.mean(expected[:2]), np.mean(expected[2:])], rtol=1e-9
    )


def test_named_probe_layers_of_a_user_model():
    model = _compiled(mlp("tanh", dtype="float64", dropout=0.0))
    x, y = _data(16)
    cb = BetaEff(layers=MLP_LAYERS)
    model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, callbacks=[cb], verbose=0)
    np.testing.assert_allclose(cb.step_values, _expected(model, x, y, layers=MLP_LAYERS), rtol=1e-9)


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
    _compiled(a, lr=0.1)
    ha = a.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, callbacks=[BetaEff()], verbose=0)
    keras.utils.set_random_seed(0)
    _compiled(b, lr=0.1)
    hb = b.fit(x, y, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-5)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=False):
        np.testing.assert_allclose(wa, wb, rtol=1e-5, atol=1e-6)
    assert "beta_eff" not in hb.history


def test_plain_fit_after_the_callback_uses_keras_step_again():
    model = _compiled(probe_model(dtype="float64", dropout=0.0), lr=0.01)
    x, y = _data(16)
    model.fit(x, y, batch_size=BATCH, epochs=1, callbacks=[BetaEff()], verbose=0)
    assert "train_step" not in vars(model)
    hist = model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    assert "beta_eff" not in hist.history
    cb = BetaEff()  # and a new callback hooks in again
    hist = model.fit(x, y, batch_size=BATCH, epochs=1, callbacks=[cb], verbose=0)
    assert len(cb.step_values) == 2 and np.isfinite(hist.history["beta_eff"][0])


def test_csv_logger_and_validation_see_beta(tmp_path):
    model = _compiled(probe_model(), lr=0.01, metrics=["accuracy"])
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
    model = _compiled(ncap.attach_probe(conv_backbone(), 3, hidden=(8, 6, 5), seed=1), lr=0.05)
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
    plain = _compiled(mlp("relu", dtype="float64"))
    with pytest.raises(ValueError, match="no probe found"):
        plain.fit(x, y, epochs=1, callbacks=[BetaEff()], verbose=0)
    summed = probe_model()
    summed.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(reduction="sum")
    )
    with pytest.raises(ValueError, match="sum_over_batch_size"):
        summed.fit(x, y, epochs=1, callbacks=[BetaEff()], verbose=0)
    shallow = _compiled(mlp("relu", dtype="float64", widths=(4, 3)))
    with pytest.raises(ValueError, match="three hidden layers"):
        shallow.fit(x, y, epochs=1, callbacks=[BetaEff(layers=["d0", "d1", "out"])], verbose=0)


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

    model = _compiled(probe_model(dtype="float64", dropout=0.0))
    x, y = _data(24)
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
    _compiled(model)
    x, y = data(n=8)
    with pytest.raises(ValueError, match="overrides train_step"):
        model.fit(x, y, epochs=1, callbacks=[BetaEff()], verbose=0)
