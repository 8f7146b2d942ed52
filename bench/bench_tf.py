"""Benchmarks of the TensorFlow front-end (pytest-benchmark; not part of the test run).

    PYTHONPATH=src python -m pytest bench/bench_tf.py --benchmark-only \
        --benchmark-group-by=group --benchmark-columns=min,median,mean,rounds

(a) ``fit`` with ``ncap.keras.BetaEff`` recording every step vs ``fit`` without it:
    a small conv backbone + the default probe (256, 128, 64) on scikit-learn's
    digits (1797 8x8 images), batch 64, one epoch per round.
(b) the reference probe 2048-256-128-64-10 at B = 64: the closed-form kernel vs
    the autodiff direct path vs the hessian path, eager and in ``tf.function``.

The ``*_ratio`` entries time both sides interleaved in the same process on the
same inputs and store the median ratio in ``extra_info`` (also printed).
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import statistics
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

import ncap
from ncap.keras import BetaEff
from ncap.tf import autodiff
from ncap.tf.capture import get_chain
from ncap.tf.ingraph import beta_in_graph


def _interleaved(fns: dict, rounds: int, stat=statistics.median) -> dict:
    """Seconds of each function (median by default), run in turn round after round, so that
    load from other processes falls on all of them alike."""
    times = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return {k: stat(v) for k, v in times.items()}, times


# ------------------------------------------------------------------ (a) fit overhead


def _digits():
    d = load_digits()
    x = (d.images / 16.0).astype("float32")[..., None]
    return x, d.target.astype("int64")


def _conv_probe_model(seed: int = 0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(inp)
    h = keras.layers.Conv2D(64, 3, activation="relu")(h)
    h = keras.layers.Conv2D(64, 3, activation="relu")(h)
    backbone = keras.Model(inp, h)
    model = ncap.attach_probe(backbone, 10, seed=seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    return model


@pytest.fixture(scope="module")
def fit_setup():
    x, y = _digits()
    plain, recorded = _conv_probe_model(), _conv_probe_model()
    recorded.set_weights(plain.get_weights())
    cb = BetaEff()
    # Warm-up: trace both training functions once (the callback keeps its trace between fits).
    plain.fit(x, y, batch_size=64, epochs=1, verbose=0)
    recorded.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[cb])
    return x, y, plain, recorded, cb


def test_fit_epoch_without_callback(benchmark, fit_setup):
    x, y, plain, _, _ = fit_setup
    benchmark.group = "a: fit one epoch (digits, conv backbone + probe)"
    benchmark.pedantic(
        lambda: plain.fit(x, y, batch_size=64, epochs=1, verbose=0), rounds=7, warmup_rounds=1
    )


def test_fit_epoch_with_callback(benchmark, fit_setup):
    x, y, _, recorded, cb = fit_setup
    benchmark.group = "a: fit one epoch (digits, conv backbone + probe)"
    benchmark.pedantic(
        lambda: recorded.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[cb]),
        rounds=7,
        warmup_rounds=1,
    )
    assert len(cb.step_values) == 29 and np.all(np.isfinite(cb.step_values))


def test_fit_overhead_ratio(benchmark, fit_setup):
    x, y, plain, recorded, cb = fit_setup
    med, times = _interleaved(
        {
            "plain": lambda: plain.fit(x, y, batch_size=64, epochs=1, verbose=0),
            "callback": lambda: recorded.fit(
                x, y, batch_size=64, epochs=1, verbose=0, callbacks=[cb]
            ),
        },
        rounds=21,
    )
    low = {k: min(v) for k, v in times.items()}
    ratio, ratio_min = med["callback"] / med["plain"], low["callback"] / low["plain"]
    benchmark.group = "a: ratio"
    benchmark.extra_info.update(
        plain_median_s=med["plain"],
        callback_median_s=med["callback"],
        ratio_median=ratio,
        plain_min_s=low["plain"],
        callback_min_s=low["callback"],
        ratio_min=ratio_min,
    )
    print(
        f"\nfit epoch (median of 21): plain {med['plain']:.4f} s, with BetaEff "
        f"{med['callback']:.4f} s, ratio {ratio:.3f}; min: {low['plain']:.4f} s vs "
        f"{low['callback']:.4f} s, ratio {ratio_min:.3f}"
    )
    benchmark.pedantic(lambda: None, rounds=1)


# ------------------------------------------------------------------ (b) reference probe


@pytest.fixture(scope="module")
def reference():
    keras.utils.set_random_seed(0)
    inp = keras.Input((2048,))
    backbone = keras.Model(inp, keras.layers.Identity()(inp))
    model = ncap.attach_probe(backbone, 10, hidden=(256, 128, 64), seed=0)
    rng = np.random.default_rng(0)
    x = np.maximum(rng.normal(size=(64, 2048)), 0).astype("float32")  # ReLU-like features
    y = rng.integers(0, 10, 64)
    cap = ncap.capture(model, x, y, training=True, seed=1)
    chain = get_chain(model)
    st = cap.state
    labels = tf.constant(st.labels)

    def core(interaction):
        return lambda: autodiff.batch_terms(
            chain, st.z, st.a, st.records, st.g_last, labels, st.loss_fn, interaction
        )

    fns = {
        "kernel": lambda: ncap.beff(cap.acts, cap.derivs, cap.grads),
        "kernel_1_thread": lambda: ncap.beff(cap.acts, cap.derivs, cap.grads, threads=1),
        "direct_eager": core("direct"),
        "hessian_eager": core("hessian"),
    }
    direct_graph = tf.function(core("direct"))
    hessian_graph = tf.function(core("hessian"))
    in_graph = tf.function(beta_in_graph)
    tensors = (
        [tf.constant(a) for a in cap.acts],
        [tf.constant(a) for a in cap.derivs],
        [tf.constant(a) for a in cap.grads],
    )
    fns["direct_tf_function"] = lambda: [t.numpy() for t in direct_graph()[0]]
    fns["hessian_tf_function"] = lambda: [t.numpy() for t in hessian_graph()[0]]
    fns["closed_form_tf_function"] = lambda: in_graph(*tensors).numpy()
    for fn in fns.values():  # trace and warm up
        fn()
    # All paths compute the same direct beta.
    direct = autodiff.batch_terms(
        chain, st.z, st.a, st.records, st.g_last, labels, st.loss_fn, "direct"
    )
    value = float(sum(direct[0]) / sum(direct[1]))
    assert value == pytest.approx(ncap.beff(cap.acts, cap.derivs, cap.grads).value, rel=1e-3)
    return model, x, y, cap, fns


@pytest.mark.parametrize(
    "path",
    [
        "kernel",
        "kernel_1_thread",
        "closed_form_tf_function",
        "direct_eager",
        "direct_tf_function",
        "hessian_eager",
        "hessian_tf_function",
    ],
)
def test_reference_probe_beta_from_capture(benchmark, reference, path):
    benchmark.group = "b: beta of a captured batch, 2048-256-128-64-10, B=64"
    fn = reference[4][path]
    rounds = 30 if path.startswith(("kernel", "closed_form")) else 5
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=1)


@pytest.mark.parametrize(
    "method, interaction, compiled",
    [
        ("closed_form", "direct", False),
        ("autodiff", "direct", False),
        ("autodiff", "direct", True),
        ("autodiff", "hessian", True),
    ],
)
def test_reference_probe_end_to_end(benchmark, reference, method, interaction, compiled):
    model, x, y, _, _ = reference
    benchmark.group = "b: ncap.beff(model, x, y) end to end, 2048-256-128-64-10, B=64"

    def fn():
        return ncap.beff(
            model,
            x,
            y,
            method=method,
            interaction=interaction,
            compiled=compiled,
            training=True,
            seed=1,
        )

    fn()
    benchmark.pedantic(fn, rounds=5, warmup_rounds=1)


def test_reference_probe_speed_ratio(benchmark, reference):
    fns = reference[4]
    med, _ = _interleaved(
        {
            k: fns[k]
            for k in (
                "kernel",
                "kernel_1_thread",
                "direct_tf_function",
                "hessian_tf_function",
                "closed_form_tf_function",
            )
        },
        rounds=15,
    )
    ratios = {
        "direct_tf_function / kernel": med["direct_tf_function"] / med["kernel"],
        "hessian_tf_function / kernel": med["hessian_tf_function"] / med["kernel"],
        "direct_tf_function / kernel_1_thread": med["direct_tf_function"] / med["kernel_1_thread"],
        "direct_tf_function / closed_form_tf_function": med["direct_tf_function"]
        / med["closed_form_tf_function"],
    }
    benchmark.group = "b: ratio"
    benchmark.extra_info.update({f"{k}_s": v for k, v in med.items()})
    benchmark.extra_info.update(ratios)
    print("\n" + "\n".join(f"{k}: {v * 1e3:.3f} ms" for k, v in med.items()))
    print("\n".join(f"{k}: {v:.1f}x" for k, v in ratios.items()))
    benchmark.pedantic(lambda: None, rounds=1)
