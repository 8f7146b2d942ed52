"""ncap.beff(model, x, y): closed form vs autodiff (SPEC section 5), and the hessian path."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf
from support.tf_helpers import MLP_LAYERS, data, floatx, mlp, probe_model

import ncap
from ncap.tf import autodiff
from ncap.tf.capture import forward, get_chain

ACTIVATIONS = [
    "relu",
    "tanh",
    "sigmoid",
    "gelu",
    "elu",
    "selu",
    "softplus",
    "swish",
    "leaky_relu",
    "linear",
]


def _both(model, x, y, **kw):
    cap = ncap.capture(model, x, y, **kw)
    closed = ncap.beff(model, x, y, method="closed_form", capture=cap, layers=kw.get("layers"))
    auto = ncap.beff(model, x, y, method="autodiff", capture=cap, layers=kw.get("layers"))
    return cap, closed, auto


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_methods_agree_float64(activation, training):
    # BatchNorm (non-trivial gamma, beta and moving statistics) and Dropout(0.3) between layers.
    model = mlp(activation, dtype="float64")
    x, y = data(n=9, dtype="float64", seed=3)
    cap, closed, auto = _both(model, x, y, layers=MLP_LAYERS, training=training, seed=7)
    assert closed.method == "closed_form" and auto.method == "autodiff"
    assert auto.value == pytest.approx(closed.value, rel=1e-9, abs=1e-12)
    assert auto.denominator == pytest.approx(closed.denominator, rel=1e-9, abs=1e-14)
    assert auto.numerator == pytest.approx(closed.numerator, rel=1e-9, abs=1e-14)
    assert auto.degenerate == closed.degenerate
    for a, c in zip(auto.per_layer, closed.per_layer, strict=False):
        assert (a.fan_in, a.fan_out) == (c.fan_in, c.fan_out)
        assert a.numerator == pytest.approx(c.numerator, rel=1e-8, abs=1e-13)
        assert a.denominator == pytest.approx(c.denominator, rel=1e-8, abs=1e-13)


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_methods_agree_float32(activation, training):
    model = mlp(activation, dtype="float32")
    x, y = data(n=16, seed=5)
    cap, closed, auto = _both(model, x, y, layers=MLP_LAYERS, training=training, seed=1)
    assert cap.acts[0].dtype == np.float32
    assert auto.value == pytest.approx(closed.value, rel=2e-4, abs=1e-6)


def test_attach_probe_model_agrees_in_training_mode_with_dropout():
    model = probe_model(dtype="float64", hidden=(9, 7, 5))
    x, y = data(n=12, dtype="float64")
    cap, closed, auto = _both(model, x, y, training=True)
    assert np.any(cap.derivs[1] == 0)  # masks and ReLU zeros are in play
    assert auto.value == pytest.approx(closed.value, rel=1e-9)


def test_degrees_agree_with_the_kernel():
    model = mlp("tanh", dtype="float64")
    x, y = data(n=6, dtype="float64")
    cap = ncap.capture(model, x, y, layers=MLP_LAYERS, training=True, seed=2)
    chain = get_chain(model, MLP_LAYERS)
    state = cap.state
    g = autodiff.backprop(chain, state.a, state.records, state.g_last)
    for l in range(4):  # the vector-Jacobian recursion equals the closed-form one
        np.testing.assert_allclose(g[l].numpy(), cap.grads[l], rtol=1e-10, atol=1e-14)
    ad = autodiff.direct_degrees(chain, state.z, state.records, g, autodiff.kernels_of(chain))
    kernel = ncap.degrees(cap.acts, cap.derivs, cap.grads)
    for (ai, ao), (ki, ko) in zip(ad, kernel, strict=False):
        np.testing.assert_allclose(ai.numpy(), ki, rtol=1e-9, atol=1e-14)
        np.testing.assert_allclose(ao.numpy(), ko, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_sample_reduction_agrees(training):
    model = mlp("elu", dtype="float64")
    x, y = data(n=5, dtype="float64")
    cap = ncap.capture(model, x, y, layers=MLP_LAYERS, training=training, seed=3)
    closed = ncap.beff(model, x, y, layers=MLP_LAYERS, capture=cap, reduction="sample")
    auto = ncap.beff(
        model, x, y, layers=MLP_LAYERS, capture=cap, reduction="sample", method="autodiff"
    )
    assert closed.value.shape == auto.value.shape == (5,)
    np.testing.assert_allclose(auto.value, closed.value, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(auto.degenerate, closed.degenerate)


def test_compiled_autodiff_matches_eager():
    model = probe_model(dtype="float64")
    x, y = data(n=8, dtype="float64")
    cap = ncap.capture(model, x, y, training=True)
    for interaction in ("direct", "hessian"):
        eager = ncap.beff(model, x, y, capture=cap, method="autodiff", interaction=interaction)
        graph = ncap.beff(
            model, x, y, capture=cap, method="autodiff", interaction=interaction, compiled=True
        )
        assert graph.value == pytest.approx(eager.value, rel=1e-10)


def test_dead_layer_is_degenerate_in_both_methods():
    model = mlp("relu", dtype="float64", batchnorm=False, dropout=0)
    layer = model.get_layer("d1")
    layer.kernel.assign(np.zeros(layer.kernel.shape))
    x, y = data(n=4, dtype="float64")
    _, closed, auto = _both(model, x, y, layers=MLP_LAYERS)
    assert closed.degenerate and auto.degenerate
    assert closed.value == 0.0 and auto.value == 0.0


# ---------------------------------------------------------------- conv probes


def _conv1x1_probe_and_dense_twin():
    """A Conv1D(kernel 1) probe on length-1 sequences and the Dense probe it equals."""
    with floatx("float64"):
        inp = keras.Input((1, 6))
        h = keras.layers.Conv1D(7, 1, name="c0")(inp)
        h = keras.layers.BatchNormalization(name="bn0", moving_variance_initializer="ones")(h)
        h = keras.layers.Activation("tanh")(h)
        h = keras.layers.Conv1D(6, 1, activation="relu", name="c1")(h)
        h = keras.layers.Conv1D(5, 1, activation="gelu", name="c2")(h)
        h = keras.layers.Flatten()(h)
        out = keras.layers.Dense(3, activation="softmax", name="out")(h)
        conv = keras.Model(inp, out)
        d_in = keras.Input((6,))
        h = keras.layers.Dense(7, name="c0")(d_in)
        h = keras.layers.BatchNormalization(name="bn0")(h)
        h = keras.layers.Activation("tanh")(h)
        h = keras.layers.Dense(6, activation="relu", name="c1")(h)
        h = keras.layers.Dense(5, activation="gelu", name="c2")(h)
        out = keras.layers.Dense(3, activation="softmax", name="out")(h)
        dense = keras.Model(d_in, out)
    for name in ("c0", "c1", "c2"):
        k, b = conv.get_layer(name).get_weights()
        dense.get_layer(name).set_weights([k[0], b + 0.05])
        conv.get_layer(name).set_weights([k, b + 0.05])
    dense.get_layer("out").set_weights(conv.get_layer("out").get_weights())
    bn = conv.get_layer("bn0")
    stats = [
        np.linspace(0.8, 1.3, 7),
        np.linspace(-0.1, 0.1, 7),
        np.linspace(-0.2, 0.2, 7),
        np.linspace(0.5, 2.0, 7),
    ]
    bn.set_weights(stats)
    dense.get_layer("bn0").set_weights(stats)
    return conv, dense


@pytest.mark.parametrize("training", [False, True], ids=["inference", "training"])
def test_conv_weight_layers_on_the_autodiff_path(training):
    conv, dense = _conv1x1_probe_and_dense_twin()
    x, y = data(n=8, dtype="float64")
    names = ["c0", "c1", "c2", "out"]
    r_conv = ncap.beff(conv, x[:, None, :], y, layers=names, training=training)
    r_dense = ncap.beff(dense, x, y, layers=names, training=training)
    assert r_conv.method == "autodiff" and r_dense.method == "closed_form"  # "auto" chose
    assert r_conv.value == pytest.approx(r_dense.value, rel=1e-9)
    assert r_conv.per_layer[0].fan_in == 6 and r_conv.per_layer[0].fan_out == 7


def test_spatial_conv_probe_degrees_are_consistent():
    with floatx("float64"):
        inp = keras.Input((6, 6, 2))
        h = keras.layers.Conv2D(3, 3, activation="relu", name="k1")(inp)
        h = keras.layers.MaxPooling2D(2)(h)
        h = keras.layers.Conv2D(4, 2, activation="tanh", name="k2")(h)
        h = keras.layers.Flatten()(h)
        h = keras.layers.Dense(5, activation="relu", name="k3")(h)
        out = keras.layers.Dense(3, activation="softmax", name="k4")(h)
        model = keras.Model(inp, out)
    x = np.random.default_rng(0).normal(size=(5, 6, 6, 2))
    y = np.array([0, 1, 2, 1, 0])
    names = ["k1", "k2", "k3", "k4"]
    result = ncap.beff(model, x, y, layers=names)
    assert result.method == "autodiff" and np.isfinite(result.value)
    assert result.info["scale"] == "abs_delta_in"
    chain = get_chain(model, names)
    state = forward(chain, x, y)
    g = autodiff.backprop(chain, state.a, state.records, state.g_last)
    deg = autodiff.direct_degrees(chain, state.z, state.records, g, autodiff.kernels_of(chain))
    for l in range(3):  # each block of P sums to the same total from either side
        assert float(tf.reduce_sum(deg[l][0])) == pytest.approx(
            float(tf.reduce_sum(deg[l + 1][1])), rel=1e-10
        )
    assert deg[0][1].shape == (3, 3, 2, 3)
    assert float(tf.reduce_sum(tf.abs(deg[0][1]))) == 0.0  # no layer before the first


# ---------------------------------------------------------------- hessian


def _loss_grad(model, x, y, names):
    kernels = [model.get_layer(n).kernel for n in names]
    with tf.GradientTape() as tape:
        for k in kernels:
            tape.watch(k.value)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, model(x)))
    return [g.numpy() for g in tape.gradient(loss, [k.value for k in kernels])]


def _fd_hessian_degrees(model, x, y, names, eps=1e-5):
    """delta_in(W^l) = H_{l,l+1} 1 and delta_out(W^{l+1}) = H_{l+1,l} 1 by central differences
    of the model's own gradient (its real forward pass, inference mode)."""
    kernels = [model.get_layer(n).kernel for n in names]
    n = len(names)
    d_in = [np.zeros(k.shape) for k in kernels]
    d_out = [np.zeros(k.shape) for k in kernels]
    for l in range(n):
        base = kernels[l].numpy()
        for idx in np.ndindex(base.shape):
            diffs = []
            for sign in (1, -1):
                k = base.copy()
                k[idx] += sign * eps
                kernels[l].assign(k)
                diffs.append(_loss_grad(model, x, y, names))
            kernels[l].assign(base)
            if l + 1 < n:
                d_in[l][idx] = (diffs[0][l + 1].sum() - diffs[1][l + 1].sum()) / (2 * eps)
            if l > 0:
                d_out[l][idx] = (diffs[0][l - 1].sum() - diffs[1][l - 1].sum()) / (2 * eps)
    return d_in, d_out


@pytest.mark.parametrize("activation", ["tanh", "softplus"])
def test_hessian_degrees_match_finite_differences(activation):
    model = mlp(activation, dtype="float64", dropout=0, widths=(3, 3, 2), n_in=3)
    x, y = data(n=5, n_in=3, dtype="float64", seed=2)
    chain = get_chain(model, MLP_LAYERS)
    state = forward(chain, x, y)
    ad = autodiff.hessian_degrees(
        chain,
        state.z[0],
        state.records,
        tf.constant(state.labels),
        state.loss_fn,
        autodiff.kernels_of(chain),
    )
    fd_in, fd_out = _fd_hessian_degrees(model, x, y, MLP_LAYERS)
    for l in range(4):
        np.testing.assert_allclose(ad[l][0].numpy(), fd_in[l], rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(ad[l][1].numpy(), fd_out[l], rtol=1e-5, atol=1e-7)
    result = ncap.beff(model, x, y, layers=MLP_LAYERS, interaction="hessian")
    assert result.method == "autodiff" and result.interaction == "hessian"
    num = sum((fi * fo).sum() for fi, fo in zip(fd_in, fd_out, strict=False))
    den = sum(fi.sum() for fi in fd_in)
    assert result.value == pytest.approx(num / den, rel=1e-5)
    # The Hessian is symmetric: each mixed block sums to the same from either side.
    for l in range(3):
        assert float(tf.reduce_sum(ad[l][0])) == pytest.approx(
            float(tf.reduce_sum(ad[l + 1][1])), rel=1e-10
        )


def test_hessian_differs_from_direct_interaction():
    # The Hessian holds the indirect terms that the direct interaction drops.
    model = probe_model(dtype="float64")
    x, y = data(n=8, dtype="float64")
    direct = ncap.beff(model, x, y)
    hessian = ncap.beff(model, x, y, interaction="hessian")
    assert hessian.method == "autodiff" and direct.method == "closed_form"
    assert hessian.value != pytest.approx(direct.value, rel=1e-3)


def test_hessian_sample_reduction_is_one_value_per_sample():
    model = probe_model(dtype="float64")
    x, y = data(n=4, dtype="float64")
    r = ncap.beff(model, x, y, interaction="hessian", reduction="sample")
    assert r.value.shape == (4,)
    one = ncap.beff(model, x[1:2], y[1:2], interaction="hessian")
    assert r.value[1] == pytest.approx(one.value, rel=1e-9)


# ---------------------------------------------------------------- bad input


def test_bad_options():
    model = probe_model()
    x, y = data(n=4)
    with pytest.raises(ValueError, match="method"):
        ncap.beff(model, x, y, method="exact")
    with pytest.raises(ValueError, match="interaction"):
        ncap.beff(model, x, y, interaction="full")
    with pytest.raises(ValueError, match="reduction"):
        ncap.beff(model, x, y, reduction="mean")
    with pytest.raises(ValueError, match="autodiff"):
        ncap.beff(model, x, y, method="closed_form", interaction="hessian")
    with pytest.raises(TypeError, match="capture"):
        ncap.beff(model, x, y, capture="not a capture")
    with pytest.raises(TypeError, match="training"):
        ncap.beff(model, x, y, training="yes")
    with pytest.raises(TypeError, match="compiled"):
        ncap.beff(model, x, y, compiled=1)
    with pytest.raises(TypeError, match="seed"):
        ncap.beff(model, x, y, training=True, seed=True)
    with pytest.raises(ValueError, match="threads"):
        ncap.beff(model, x, y, threads=-5)


def test_closed_form_refuses_a_conv_probe():
    conv, _ = _conv1x1_probe_and_dense_twin()
    x, y = data(n=4, dtype="float64")
    with pytest.raises(ValueError, match="method='autodiff'"):
        ncap.beff(conv, x[:, None, :], y, layers=["c0", "c1", "c2", "out"], method="closed_form")


def test_capture_from_another_probe_is_refused():
    a, b = probe_model(), mlp("relu", dtype="float32")
    x, y = data(n=4)
    cap = ncap.capture(b, x, y, layers=MLP_LAYERS)
    with pytest.raises(ValueError, match="capture"):
        ncap.beff(a, x, y, capture=cap)
