"""Benchmarks of the closed-form core (issue 2, point 7). Not part of the test run.

Three implementations of the same closed form (SPEC section 3), timed on the
same inputs in one run:

* ``kernel``: ``ncap.beff`` (the compiled C++ core; input checks included),
  with all cores (``threads=0``) and with one thread;
* ``numpy``: ``ncap.reference.beff_numpy`` (B x B Gram matrices with NumPy matmuls);
* ``tf``: the same maths as TensorFlow ops inside ``tf.function`` (below),
  accumulating in float64 like the kernel, inputs already TF tensors.

Traces come from a real-looking probe (Dense with He-normal weights,
BatchNorm with batch statistics, ReLU, Dropout(0.4); softmax cross-entropy
gradients through the SPEC's recursion), not dense random arrays.

Run:  PYTHONPATH=src python -m pytest bench/bench_core.py --benchmark-json=bench/core.json
      python bench/summarize.py bench/core.json
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from ncap.reference import beff_numpy

import ncap

REFERENCE = (2048, 256, 128, 64, 10)
REFERENCE_BATCH = 64

# (group name, widths, batch): the reference trace, then scaling in B and in width.
CONFIGS = [
    ("ref", REFERENCE, REFERENCE_BATCH),
    ("B=16", REFERENCE, 16),
    ("B=256", REFERENCE, 256),
    ("B=1024", REFERENCE, 1024),
    ("hidden/2", (2048, 128, 64, 32, 10), REFERENCE_BATCH),
    ("hidden*2", (2048, 512, 256, 128, 10), REFERENCE_BATCH),
    ("hidden*4", (2048, 1024, 512, 256, 10), REFERENCE_BATCH),
    ("input=8192", (8192, 256, 128, 64, 10), REFERENCE_BATCH),
]
IMPLS = ["kernel", "kernel_1thread", "numpy", "tf"]


def probe_trace(widths, batch, seed=0, dtype=np.float32, rate=0.4):
    """acts, derivs, grads of a probe on ReLU-like backbone features (ncap's argument layout)."""
    rng = np.random.default_rng(seed)
    n_layers = len(widths) - 1
    z = [np.maximum(rng.normal(0.3, 1.0, size=(batch, widths[0])), 0.0)]  # post-ReLU features
    s, W = [None], [None]
    for l in range(1, n_layers + 1):
        W.append(rng.normal(0.0, np.sqrt(2.0 / widths[l - 1]), size=(widths[l], widths[l - 1])))
    for l in range(1, n_layers):
        a = z[l - 1] @ W[l].T
        sigma = np.sqrt(a.var(axis=0) + 1e-3)
        h = (a - a.mean(axis=0)) / sigma  # BatchNorm, gamma = 1, beta = 0
        keep = (rng.random(size=h.shape) >= rate) / (1.0 - rate)
        z.append(np.maximum(h, 0.0) * keep)
        s.append((h > 0) * keep / sigma)
    logits = z[-1] @ W[n_layers].T
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    g = {n_layers: p - np.eye(widths[-1])[rng.integers(0, widths[-1], size=batch)]}
    for l in range(n_layers - 1, 0, -1):
        g[l] = s[l] * (g[l + 1] @ W[l + 1])
    cast = lambda x: np.ascontiguousarray(x, dtype=dtype)  # noqa: E731
    return (
        [cast(x) for x in z],
        [cast(x) for x in s[1:]],
        [cast(g[l]) for l in range(1, n_layers + 1)],
    )


def _tf():
    import tensorflow as tf

    return tf


def make_tf_beff():
    """The closed form of SPEC section 3 (batch reduction) as TF ops in a tf.function."""
    tf = _tf()

    @tf.function
    def beff_tf(acts, derivs, grads):
        f64 = tf.float64
        n_layers = len(acts)
        z = [tf.cast(a, f64) for a in acts[:-1]]
        s = [None] + [tf.cast(d, f64) for d in derivs]
        g = [None] + [tf.cast(x, f64) for x in grads]
        batch = tf.cast(tf.shape(z[0])[0], f64)
        Z = [tf.reduce_sum(x, axis=1) for x in z]
        absZ = [tf.reduce_sum(tf.abs(x), axis=1) for x in z]
        den_b = tf.zeros_like(Z[0])
        scale_b = tf.zeros_like(Z[0])
        for l in range(1, n_layers):
            N = tf.reduce_sum(s[l], axis=1)
            S = tf.reduce_sum(g[l + 1], axis=1)
            den_b += Z[l - 1] * N * S
            scale_b += (
                absZ[l - 1] * tf.reduce_sum(tf.abs(s[l]), 1) * tf.reduce_sum(tf.abs(g[l + 1]), 1)
            )
        num = tf.constant(0.0, f64)
        for l in range(2, n_layers):
            A = tf.matmul(s[l], g[l], transpose_b=True)
            C = tf.matmul(z[l - 1], s[l - 1], transpose_b=True)
            S = tf.reduce_sum(g[l + 1], axis=1)
            num += tf.tensordot(S, tf.linalg.matvec(A * C, Z[l - 2]), 1) / batch**2
        den = tf.reduce_mean(den_b)
        scale = tf.reduce_mean(scale_b)
        degenerate = tf.abs(den) <= 1e-10 * scale
        value = tf.where(
            degenerate,
            tf.constant(0.0, f64),
            num / tf.where(degenerate, tf.constant(1.0, f64), den),
        )
        return value, num, den

    return beff_tf


_TRACES: dict = {}


def _trace(widths, batch):
    key = (widths, batch)
    if key not in _TRACES:
        _TRACES[key] = probe_trace(widths, batch)
    return _TRACES[key]


def _runner(impl, trace):
    acts, derivs, grads = trace
    if impl == "kernel":
        return lambda: ncap.beff(acts, derivs, grads).value
    if impl == "kernel_1thread":
        return lambda: ncap.beff(acts, derivs, grads, threads=1).value
    if impl == "numpy":
        return lambda: beff_numpy(acts, derivs, grads)["value"]
    if impl == "tf":
        tf = _tf()
        fn = make_tf_beff()
        t_acts, t_derivs, t_grads = ([tf.constant(x) for x in xs] for xs in trace)
        return lambda: float(fn(t_acts, t_derivs, t_grads)[0])
    raise ValueError(impl)


@pytest.mark.parametrize("config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_implementations_agree(config):
    """The timed implementations compute the same number (so the ratios compare like with like)."""
    _, widths, batch = config
    trace = _trace(widths, batch)
    want = ncap.beff(*trace).value
    assert not ncap.beff(*trace).degenerate
    for impl in IMPLS:
        np.testing.assert_allclose(_runner(impl, trace)(), want, rtol=1e-9)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_bench_batch(benchmark, config, impl):
    name, widths, batch = config
    run = _runner(impl, _trace(widths, batch))
    run()  # warm up (tf.function traces here)
    benchmark.group = name
    benchmark.extra_info.update(
        impl=impl,
        widths="-".join(map(str, widths)),
        batch=batch,
        reduction="batch",
        dtype="float32",
    )
    benchmark(run)


@pytest.mark.parametrize("impl", ["kernel", "kernel_1thread", "numpy"])
def test_bench_sample(benchmark, impl):
    """Per-sample betas on the reference trace (the TF version covers the batch reduction only)."""
    acts, derivs, grads = _trace(REFERENCE, REFERENCE_BATCH)
    if impl == "numpy":
        run = lambda: beff_numpy(acts, derivs, grads, "sample")["value"]  # noqa: E731
    else:
        threads = 1 if impl == "kernel_1thread" else 0
        run = lambda: ncap.beff(acts, derivs, grads, reduction="sample", threads=threads).value  # noqa: E731
    np.testing.assert_allclose(
        run(), ncap.beff(acts, derivs, grads, reduction="sample").value, rtol=1e-9
    )
    benchmark.group = "ref sample"
    benchmark.extra_info.update(
        impl=impl,
        widths="-".join(map(str, REFERENCE)),
        batch=REFERENCE_BATCH,
        reduction="sample",
        dtype="float32",
    )
    benchmark(run)
