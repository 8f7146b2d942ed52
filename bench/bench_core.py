"""Benchmarks of the closed-form core. Not part of the test run.

Three implementations of the same closed form (SPEC section 3), timed on the
same inputs in one run:

* ``kernel``: ``ncap.beff`` (the compiled C++ core; input checks included),
  with all cores (``threads=0``) and with one thread;
* ``numpy``: ``ncap.arrays.reference.beff_numpy`` (B x B Gram matrices with NumPy matmuls);
* ``tf``: the package's own TF closed form, ``ncap.tf.ingraph.beta_in_graph``
  (what ``BetaEff`` runs inside the training step), in a ``tf.function``,
  inputs already TF tensors.

Each kernel row also records the numerator's multiply-adds (the dense count of
the strategy the core plans, e.g. 2.36 M on the reference trace) and the
machine's float64 multiply-add peak measured in the same run
(``bench_peak.py``), so that ``summarize.py`` can print the kernel's rate as a
fraction of the peak.

Traces come from a real-looking probe (Dense with He-normal weights,
BatchNorm with batch statistics, ReLU, Dropout(0.4); softmax cross-entropy
gradients through the SPEC's recursion), not dense random arrays.

Run:  python -m pytest bench/bench_core.py --benchmark-json=/tmp/core.json
      python bench/summarize.py /tmp/core.json
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))  # bench_peak, also under --import-mode=importlib

import numpy as np
import pytest
from bench_peak import measure_peak

import ncap
from ncap.arrays.reference import beff_numpy

REFERENCE = (2048, 256, 128, 64, 10)
REFERENCE_BATCH = 64

# (group name, widths, batch[, activation]): the reference trace, then scaling in B and in
# width; "dense" has no zeros (tanh, no dropout), so the kernel cannot skip any work.
CONFIGS = [
    ("ref", REFERENCE, REFERENCE_BATCH),
    ("ref dense", REFERENCE, REFERENCE_BATCH, "tanh"),
    ("B=16", REFERENCE, 16),
    ("B=256", REFERENCE, 256),
    ("B=1024", REFERENCE, 1024),
    ("hidden/2", (2048, 128, 64, 32, 10), REFERENCE_BATCH),
    ("hidden*2", (2048, 512, 256, 128, 10), REFERENCE_BATCH),
    ("hidden*4", (2048, 1024, 512, 256, 10), REFERENCE_BATCH),
    ("input=8192", (8192, 256, 128, 64, 10), REFERENCE_BATCH),
]
IMPLS = ["kernel", "kernel_1thread", "numpy", "tf"]


def probe_trace(widths, batch, seed=0, dtype=np.float32, rate=0.4, activation="relu"):
    """acts, derivs, grads of a probe on ReLU-like backbone features (ncap's argument layout).

    activation="tanh" (no dropout) gives a trace without zeros."""
    if activation == "tanh":
        rate = 0.0
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
        if activation == "tanh":
            z.append(np.tanh(h) * keep)
            s.append((1.0 - np.tanh(h) ** 2) * keep / sigma)
        else:
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


def numerator_fmas(widths, batch) -> float:
    """Multiply-adds of the batch numerator as the core plans it (dense count, before the
    zeros of ReLU/dropout are skipped): per layer the cheaper of B^2 (n_l + n_{l-1}) (Gram
    products) and 2 B n_l n_{l-1} (degree rows)."""
    total = 0.0
    for l in range(2, len(widths) - 1):
        n, n_prev = widths[l], widths[l - 1]
        total += min(batch * batch * (n + n_prev), 2 * batch * n * n_prev)
    return float(total)


@pytest.fixture(scope="session")
def peak() -> dict:
    return measure_peak()


def make_tf_beff():
    """The package's TF closed form (batch reduction) in a tf.function."""
    import tensorflow as tf

    from ncap.tf.ingraph import beta_in_graph

    return tf.function(lambda acts, derivs, grads: beta_in_graph(acts, derivs, grads))


_TRACES: dict = {}


def _trace(widths, batch, activation="relu"):
    key = (widths, batch, activation)
    if key not in _TRACES:
        _TRACES[key] = probe_trace(widths, batch, activation=activation)
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
        import tensorflow as tf

        fn = make_tf_beff()
        t_acts, t_derivs, t_grads = ([tf.constant(x) for x in xs] for xs in trace)
        return lambda: float(fn(t_acts, t_derivs, t_grads))
    raise ValueError(impl)


@pytest.mark.parametrize("config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_implementations_agree(config):
    """The timed implementations compute the same number (so the ratios compare like with like)."""
    _, widths, batch, *activation = config
    trace = _trace(widths, batch, *activation)
    want = ncap.beff(*trace).value
    assert not ncap.beff(*trace).degenerate
    for impl in IMPLS:
        np.testing.assert_allclose(_runner(impl, trace)(), want, rtol=1e-9)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_bench_batch(benchmark, peak, config, impl):
    name, widths, batch, *activation = config
    run = _runner(impl, _trace(widths, batch, *activation))
    run()  # warm up (tf.function traces here)
    benchmark.group = name
    benchmark.extra_info.update(
        impl=impl,
        widths="-".join(map(str, widths)),
        batch=batch,
        reduction="batch",
        dtype="float32",
        numerator_fmas=numerator_fmas(widths, batch),
        peak_fmas_1thread=peak["one_thread"],
        peak_fmas_all=peak["all_threads"],
        threads_all=peak["threads"],
        isa=ncap._core.isa(),
    )
    benchmark(run)


@pytest.mark.parametrize("impl", ["kernel", "kernel_1thread", "numpy"])
def test_bench_sample(benchmark, peak, impl):
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
        # per sample, the numerator is two row dot products per layer
        numerator_fmas=float(
            REFERENCE_BATCH * sum(REFERENCE[l] + REFERENCE[l - 1] for l in range(2, 4))
        ),
        peak_fmas_1thread=peak["one_thread"],
        peak_fmas_all=peak["all_threads"],
        threads_all=peak["threads"],
        isa=ncap._core.isa(),
    )
    benchmark(run)
