"""ncap.capture: z, s and g of a probe from one forward pass (SPEC section 1)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf
from support.tf_helpers import MLP_LAYERS, conv_backbone, data, dense_backbone, mlp, probe_model

import ncap


def test_layout_matches_ncap_beff():
    model = probe_model()
    x, y = data(n=10)
    cap = ncap.capture(model, x, y)
    assert isinstance(cap, ncap.Capture)
    assert [a.shape for a in cap.acts] == [(10, 8), (10, 7), (10, 6), (10, 5)]
    assert [a.shape for a in cap.derivs] == [(10, 7), (10, 6), (10, 5)]
    assert [a.shape for a in cap.grads] == [(10, 7), (10, 6), (10, 5), (10, 3)]
    assert all(
        isinstance(a, np.ndarray) and a.dtype == np.float32
        for a in cap.acts + cap.derivs + cap.grads
    )
    assert cap.layer_names == (
        "ncap_probe_dense_1",
        "ncap_probe_dense_2",
        "ncap_probe_dense_3",
        "ncap_probe_logits",
    )
    assert cap.batch_size == 10 and not cap.training
    # The arrays go straight into the kernel.
    r = ncap.beff(cap.acts, cap.derivs, cap.grads)
    assert np.isfinite(r.value)


def test_acts_are_the_models_own_intermediate_outputs():
    model = probe_model()
    x, y = data(n=9)
    cap = ncap.capture(model, x, y)
    for l, name in enumerate(
        ["ncap_probe_dropout_1", "ncap_probe_dropout_2", "ncap_probe_dropout_3"], start=1
    ):
        z = keras.Model(model.input, model.get_layer(name).output)(x, training=False)
        z = z.numpy()
        np.testing.assert_allclose(cap.acts[l], z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cap.outputs, model(x, training=False).numpy(), rtol=1e-5, atol=1e-7)


def test_last_gradient_is_softmax_minus_onehot():
    model = probe_model()
    x, y = data(n=8)
    cap = ncap.capture(model, x, y)
    onehot = np.eye(3)[y]
    np.testing.assert_allclose(cap.grads[-1], cap.outputs - onehot, atol=1e-6)
    # Categorical cross-entropy on one-hot labels gives the same gradient.
    model.compile(loss="categorical_crossentropy")
    cap2 = ncap.capture(model, x, onehot.astype("float32"))
    np.testing.assert_allclose(cap2.grads[-1], cap.grads[-1], atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu", "elu"])
def test_inference_gradients_are_the_true_per_sample_gradients(activation):
    # In inference mode nothing couples the samples, so sum_b z^{l-1}_b g^l_b^T must be the
    # real gradient of sum_b C_b with respect to each kernel.
    model = mlp(activation, dtype="float64")
    x, y = data(n=7, dtype="float64")
    cap = ncap.capture(model, x, y, layers=MLP_LAYERS)
    kernels = [model.get_layer(n).kernel for n in MLP_LAYERS]
    with tf.GradientTape() as tape:
        for k in kernels:
            tape.watch(k.value)
        p = model(x, training=False)
        loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(y, p))
    true = tape.gradient(loss, [k.value for k in kernels])
    for l in range(4):
        np.testing.assert_allclose(
            cap.acts[l].T @ cap.grads[l], true[l].numpy(), rtol=1e-9, atol=1e-12
        )


def test_training_capture_folds_batch_statistics_and_dropout_mask_into_s():
    model = probe_model(dtype="float64")
    x, y = data(n=16, dtype="float64")
    cap = ncap.capture(model, x, y, training=True, seed=4)
    assert cap.training
    dense = model.get_layer("ncap_probe_dense_1")
    bn = model.get_layer("ncap_probe_bn_1")
    a = cap.acts[0] @ dense.kernel.numpy() + dense.bias.numpy()
    inv = 1.0 / np.sqrt(a.var(axis=0) + bn.epsilon)  # batch variance, not the moving one
    normed = (a - a.mean(axis=0)) * inv
    on = normed > 0
    mask = np.where(on, cap.acts[1] / np.where(on, normed, 1.0), 0.0)
    kept = mask[on]
    # Each active unit was either dropped or scaled by 1/(1 - 0.4).
    assert np.all(np.isclose(kept, 0.0) | np.isclose(kept, 1 / 0.6))
    assert 0 < np.mean(np.isclose(kept, 0.0)) < 1
    np.testing.assert_allclose(cap.derivs[0], on * mask * inv, rtol=1e-10, atol=1e-12)


def test_recursion_through_the_probe():
    model = probe_model(dtype="float64")
    x, y = data(n=6, dtype="float64")
    cap = ncap.capture(model, x, y, training=True)
    names = cap.layer_names
    for l in range(3):
        k_next = model.get_layer(names[l + 1]).kernel.numpy()
        np.testing.assert_allclose(
            cap.grads[l], cap.derivs[l] * (cap.grads[l + 1] @ k_next.T), rtol=1e-12, atol=1e-14
        )


def test_training_capture_leaves_the_model_unchanged():
    model = probe_model()
    x, y = data(n=16)
    before = [v.numpy().copy() for v in model.variables]
    first = ncap.capture(model, x, y, training=True)
    after = [v.numpy() for v in model.variables]
    for b, a in zip(before, after, strict=False):
        np.testing.assert_array_equal(a, b)
    # The random stream is restored too, so the same masks come again.
    second = ncap.capture(model, x, y, training=True)
    for a, b in zip(first.derivs, second.derivs, strict=False):
        np.testing.assert_array_equal(a, b)


def _bn_backbone_model():
    """A backbone whose forward pass in training mode changes state: BatchNorm moving
    statistics and a Dropout's random generator; its Dense layer is frozen (non-trainable,
    but only read by a forward pass)."""
    inp = keras.Input((6,))
    h = keras.layers.Dense(
        8, kernel_initializer=keras.initializers.GlorotNormal(0), name="bb_dense"
    )(inp)
    h = keras.layers.BatchNormalization(momentum=0.5, name="bb_bn")(h)
    h = keras.layers.Dropout(0.3, name="bb_dropout")(keras.layers.ReLU()(h))
    model = ncap.attach_probe(keras.Model(inp, h), 3, hidden=(7, 6, 5), seed=1)
    model.get_layer("bb_dense").trainable = False
    return model


@pytest.mark.parametrize("compiled", [True, False])
def test_training_forward_restores_backbone_statistics(compiled):
    from ncap.tf.capture import _mutable_state, forward, get_chain

    model = _bn_backbone_model()
    x, y = data(n=16)
    bn = model.get_layer("bb_bn")
    # A training-mode call of the backbone changes its statistics ...
    backbone = keras.Model(model.inputs[0], model.get_layer("bb_dropout").output)
    stats = bn.moving_mean.numpy().copy()
    backbone(x, training=True)
    assert not np.array_equal(bn.moving_mean.numpy(), stats)
    before = [v.numpy().copy() for v in model.variables]
    chain = get_chain(model)
    state = forward(chain, x, y, training=True, compiled=compiled)
    assert state.z[0].shape == (16, 8)
    # ... and the capture's forward pass puts them back, inside the same call.
    for b, v in zip(before, model.variables, strict=True):
        np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)
    # What it restores: statistics and random states, not the kernels it only reads.
    restored = {id(v) for v in _mutable_state(chain)}
    assert id(bn.moving_mean) in restored and id(bn.moving_variance) in restored
    assert not any(id(w.kernel) in restored for w in chain.weights)
    assert id(model.get_layer("bb_dense").kernel) not in restored
    assert any(
        id(v) == id(model.get_layer("bb_dense").kernel) for v in model.non_trainable_variables
    )


def test_seed_draws_reproducible_masks():
    model = probe_model()
    x, y = data(n=16)
    a = ncap.capture(model, x, y, training=True, seed=1)
    b = ncap.capture(model, x, y, training=True, seed=1)
    c = ncap.capture(model, x, y, training=True, seed=2)
    np.testing.assert_array_equal(a.derivs[0], b.derivs[0])
    assert not np.array_equal(a.derivs[0], c.derivs[0])


def test_float64_models_give_float64_arrays():
    cap = ncap.capture(probe_model(dtype="float64"), *data(n=4, dtype="float64"))
    assert all(a.dtype == np.float64 for a in cap.acts + cap.derivs + cap.grads)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "y, match",
    [
        (np.zeros(5, int), "one label per sample"),
        (np.array([0, 1, 2, 3, 0, 1]), r"\[0, 3\)"),
        (np.array([0, -1, 2, 0, 0, 1]), r"\[0, 3\)"),
        (np.eye(4)[[0, 1, 2, 3, 0, 1]], "shape"),
        (np.array(["a"] * 6), "numeric"),
    ],
)
def test_labels_that_do_not_match_the_output(y, match):
    model = probe_model()
    x, _ = data(n=6)
    with pytest.raises((ValueError, TypeError), match=match):
        ncap.capture(model, x, y)


def test_dataset_instead_of_a_batch():
    model = probe_model()
    x, y = data(n=4)
    with pytest.raises(TypeError, match="one batch"):
        ncap.capture(model, tf.data.Dataset.from_tensor_slices(x).batch(2), y)


def test_model_without_a_probe():
    model = mlp("relu", batchnorm=False, dropout=0)
    x, y = data(n=4, dtype="float64")
    with pytest.raises(ValueError, match="no probe found.*layers="):
        ncap.capture(model, x, y)
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        ncap.capture(model, x, y, layers=["d0", "nope"])
    with pytest.raises(ValueError, match="weight layers"):
        ncap.capture(model, x, y, layers=["d0", "act0", "d2", "out"])
    with pytest.raises(ValueError, match="not named"):
        ncap.capture(model, x, y, layers=["d0", "d2", "out"])
    with pytest.raises(ValueError, match="in order"):
        ncap.capture(model, x, y, layers=["d1", "d0", "d2", "out"])


def test_probe_with_two_hidden_layers_is_refused_by_beff():
    model = mlp("relu", batchnorm=False, dropout=0, widths=(5, 4))
    x, y = data(n=4, dtype="float64")
    with pytest.raises(ValueError, match="three hidden layers"):
        ncap.beff(model, x, y, layers=["d0", "d1", "out"])


def test_conv_probe_cannot_be_captured_in_closed_form():
    inp = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(3, 3, name="c1")(inp)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(5, activation="relu", name="d1")(h)
    h = keras.layers.Dense(4, activation="relu", name="d2")(h)
    out = keras.layers.Dense(2, activation="softmax", name="o")(h)
    model = keras.Model(inp, out)
    x = np.random.default_rng(0).normal(size=(3, 6, 6, 1))
    with pytest.raises(ValueError, match="method='autodiff'"):
        ncap.capture(model, x, np.array([0, 1, 0]), layers=["c1", "d1", "d2", "o"])


def test_loss_that_is_not_per_sample_is_refused():
    model = probe_model()
    x, y = data(n=4)

    def batch_loss(y_true, y_pred):
        return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y_true, y_pred))

    with pytest.raises(ValueError, match="one loss per sample"):
        ncap.capture(model, x, y, loss=batch_loss)


def test_backbone_with_images_is_captured_through_pooling():
    model = ncap.attach_probe(conv_backbone(filters=5), 3, hidden=(7, 6, 5), seed=0)
    x = np.random.default_rng(1).normal(size=(4, 8, 8, 1)).astype("float32")
    cap = ncap.capture(model, x, np.array([0, 1, 2, 0]))
    assert cap.acts[0].shape == (4, 5)  # pooled features


def test_capture_works_on_a_model_built_from_a_dense_backbone():
    # The dense backbone's own Dense layer is not mistaken for part of the probe.
    model = ncap.attach_probe(dense_backbone(), 3, hidden=(7, 6, 5))
    cap = ncap.capture(model, *data(n=3))
    assert len(cap.acts) == 4


@pytest.mark.parametrize("training", [False, True])
def test_compiled_and_eager_forward_agree(training):
    from ncap.tf.capture import forward, get_chain

    model = mlp("gelu", dtype="float64")
    x, y = data(n=6, dtype="float64")
    chain = get_chain(model, MLP_LAYERS)
    graph = forward(chain, x, y, training=training, seed=5)
    eager = forward(chain, x, y, training=training, seed=5, compiled=False)
    for a, b in zip(
        graph.z + graph.derivs + graph.grads, eager.z + eager.derivs + eager.grads, strict=False
    ):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-14)


def test_the_compiled_forward_follows_new_batch_sizes_and_input_types():
    # The compiled pass is called through concrete functions cached by shape and dtype; each
    # batch size, dtype and input type must still give what the eager pass gives.
    from ncap.tf.capture import forward, get_chain

    model = probe_model()
    chain = get_chain(model)
    x, y = data(n=12)
    batches = [
        (x[:5], y[:5]),
        (x, y),
        (x[:5], y[:5]),
        (tf.constant(x[:7]), y[:7]),
        (x[:5].astype("float64"), y[:5]),
        (x[:5], np.eye(3, dtype="float32")[y[:5]]),  # one-hot labels: another signature
    ]
    for xb, yb in batches:
        graph = forward(chain, xb, yb)
        eager = forward(chain, xb, yb, compiled=False)
        assert graph.z[0].shape[0] == len(yb)
        for a, b in zip(graph.z + graph.grads, eager.z + eager.grads, strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_beff_of_a_model_equals_beff_of_its_capture():
    # ncap.beff(model, x, y) reads the pass's tensors without copying them; the numbers are
    # those of the Capture the user would get.
    model = probe_model()
    x, y = data(n=12)
    cap = ncap.capture(model, x, y, training=True, seed=3)
    direct = ncap.beff(model, x, y, training=True, seed=3)
    via_capture = ncap.beff(cap.acts, cap.derivs, cap.grads)
    assert direct.value == via_capture.value
    assert direct.numerator == via_capture.numerator
    assert direct.method == "closed_form"


@pytest.mark.filterwarnings("ignore:The structure of `inputs`:UserWarning")
def test_nested_inputs_go_through_the_traced_function_itself():
    model = probe_model()
    x, y = data(n=5)
    as_array = ncap.beff(model, x, y)
    as_list = ncap.beff(model, [x], y)  # a nested input: not cached by shape
    assert as_list.value == as_array.value
