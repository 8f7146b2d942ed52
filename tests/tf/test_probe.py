"""ncap.attach_probe: the frozen probe of paper Algorithm 1 (SPEC section 6)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import subprocess
import sys

import keras
import numpy as np
import pytest
from support.tf_helpers import conv_backbone, data, dense_backbone

import ncap


def _by_prefix(model, prefix):
    return [l for l in model.layers if l.name.startswith(prefix)]


def test_structure_frozen_probe_trainable_backbone():
    bb = dense_backbone()
    model = ncap.attach_probe(bb, 4, hidden=(16, 8, 6), seed=3)
    dense = _by_prefix(model, "ncap_probe_dense_")
    assert [d.units for d in dense] == [16, 8, 6]
    out = model.get_layer("ncap_probe_logits")
    assert out.units == 4 and out.activation is keras.activations.linear
    for d in dense + [out]:
        assert not d.trainable and d.activation is keras.activations.linear
    bns = _by_prefix(model, "ncap_probe_bn_")
    assert len(bns) == 3
    for bn in bns:
        # Normalises with batch statistics in training: trainable, but with no gamma/beta.
        assert bn.trainable and not bn.center and not bn.scale
        assert bn.momentum == pytest.approx(0.9)
        assert bn.trainable_weights == []
    drops = _by_prefix(model, "ncap_probe_dropout_")
    assert [d.rate for d in drops] == [0.4] * 3
    assert len(_by_prefix(model, "ncap_probe_relu_")) == 3
    # Only the backbone trains.
    assert {id(w) for w in model.trainable_weights} == {id(w) for w in bb.trainable_weights}
    # Layer order within each hidden block: Dense, BN, ReLU, Dropout.
    names = [l.name for l in model.layers if l.name.startswith("ncap_probe_")]
    assert names[:4] == [
        "ncap_probe_dense_1",
        "ncap_probe_bn_1",
        "ncap_probe_relu_1",
        "ncap_probe_dropout_1",
    ]


def test_outputs_probabilities_and_he_normal_init():
    model = ncap.attach_probe(dense_backbone(width=400), 3, hidden=(300, 8, 6), seed=0)
    x, _ = data(n=5)
    p = model.predict(x, verbose=0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(p > 0)
    k = model.get_layer("ncap_probe_dense_1").kernel.numpy()
    # He-normal (truncated normal, std sqrt(2 / fan_in)) for fan_in = 400.
    assert k.std() == pytest.approx(np.sqrt(2 / 400), rel=0.1)
    assert abs(k.mean()) < 0.01


def test_seed_makes_the_probe_reproducible():
    a = ncap.attach_probe(dense_backbone(), 3, hidden=(7, 6, 5), seed=5)
    b = ncap.attach_probe(dense_backbone(), 3, hidden=(7, 6, 5), seed=5)
    ka = a.get_layer("ncap_probe_dense_2").kernel.numpy()
    kb = b.get_layer("ncap_probe_dense_2").kernel.numpy()
    np.testing.assert_array_equal(ka, kb)


def test_image_features_are_globally_average_pooled():
    bb = conv_backbone(filters=5)
    model = ncap.attach_probe(bb, 3, hidden=(7, 6, 5))
    pool = model.get_layer("ncap_probe_pool")
    assert isinstance(pool, keras.layers.GlobalAveragePooling2D)
    assert model.get_layer("ncap_probe_dense_1").kernel.shape == (5, 7)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    assert model.predict(x, verbose=0).shape == (2, 3)


def test_batchnorm_uses_batch_statistics_in_training_and_tracks_moving_ones():
    model = ncap.attach_probe(dense_backbone(), 3, hidden=(7, 6, 5), dropout=0.0, seed=1)
    bn = model.get_layer("ncap_probe_bn_1")
    x, y = data(n=64)
    x = x * 5 + 3  # features far from mean 0 / variance 1
    feats = keras.Model(model.input, bn.output)
    z = feats(x, training=True).numpy()
    # Normalised with this batch's statistics: each unit has mean 0 and variance ~1.
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.var(axis=0), 1.0, rtol=1e-2)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    before = bn.moving_mean.numpy().copy()
    pre = keras.Model(model.input, bn.input)(x).numpy()
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, shuffle=False)
    # One step at momentum 0.9 moves the moving mean 10% of the way to the batch mean.
    expected = 0.9 * before + 0.1 * pre.mean(axis=0)
    np.testing.assert_allclose(bn.moving_mean.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_fit_trains_the_backbone_not_the_probe():
    model = ncap.attach_probe(dense_backbone(), 3, hidden=(7, 6, 5), seed=1)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    probe = [w.numpy().copy() for w in model.get_layer("ncap_probe_dense_2").weights]
    backbone = model.get_layer(index=1).kernel.numpy().copy()
    x, y = data(n=32)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for w, old in zip(model.get_layer("ncap_probe_dense_2").weights, probe, strict=False):
        np.testing.assert_array_equal(w.numpy(), old)
    assert not np.allclose(model.get_layer(index=1).kernel.numpy(), backbone)


@pytest.mark.parametrize("hidden", [(), (8,), (8, 4)])
def test_fewer_than_three_hidden_layers_is_an_error(hidden):
    with pytest.raises(ValueError, match="identically 0"):
        ncap.attach_probe(dense_backbone(), 3, hidden=hidden)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        (dict(num_classes=1), ValueError, "num_classes"),
        (dict(num_classes=2.5), ValueError, "num_classes"),
        (dict(num_classes=3, hidden=(8, 0, 4)), ValueError, "positive"),
        (dict(num_classes=3, dropout=1.0), ValueError, "dropout"),
    ],
)
def test_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        ncap.attach_probe(dense_backbone(), **kwargs)


def test_backbone_must_be_a_model():
    with pytest.raises(TypeError, match="backbone"):
        ncap.attach_probe(keras.layers.Dense(3), 3)


def test_import_ncap_does_not_import_tensorflow():
    code = (
        "import sys, ncap, numpy as np; "
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules; "
        "ncap.attach_probe; assert 'tensorflow' in sys.modules; print('ok')"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


def test_another_keras_backend_is_refused(monkeypatch):
    import importlib

    import ncap.tf._backend as backend_module

    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(ImportError, match="KERAS_BACKEND=tensorflow"):
        importlib.reload(backend_module)
    monkeypatch.undo()
    importlib.reload(backend_module)
