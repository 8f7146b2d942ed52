"""The in-graph closed form used by ncap.keras.BetaEff equals the compiled kernel."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

import ncap
from ncap.tf.ingraph import beta_in_graph


def _arrays(batch, widths, dtype, seed):
    rng = np.random.default_rng(seed)
    n_layers = len(widths) - 1
    acts = [np.abs(rng.normal(size=(batch, widths[l]))).astype(dtype) for l in range(n_layers)]
    derivs = [
        (rng.random((batch, widths[l + 1])) * (rng.random((batch, widths[l + 1])) > 0.3)).astype(
            dtype
        )
        for l in range(n_layers - 1)
    ]
    grads = [rng.normal(size=(batch, widths[l + 1])).astype(dtype) for l in range(n_layers)]
    return acts, derivs, grads


@pytest.mark.parametrize("reduction", ["batch", "sample"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("widths", [(9, 7, 6, 5, 3), (20, 8, 7, 6, 5, 4)])
def test_in_graph_closed_form_equals_the_kernel(widths, dtype, reduction):
    acts, derivs, grads = _arrays(11, widths, dtype, seed=len(widths))
    expected = ncap.beff(acts, derivs, grads, reduction=reduction)
    expected = expected.value if reduction == "batch" else np.mean(expected.value)
    tensors = [[tf.constant(a) for a in group] for group in (acts, derivs, grads)]
    eager = float(beta_in_graph(*tensors, reduction=reduction))
    graph = float(tf.function(beta_in_graph)(*tensors, reduction=reduction))
    assert eager == pytest.approx(expected, rel=1e-10)
    assert graph == pytest.approx(expected, rel=1e-10)


def test_degenerate_batch_is_zero_like_the_kernel():
    acts, derivs, grads = _arrays(5, (6, 5, 4, 3, 2), "float64", seed=0)
    for g in grads:  # all gradients vanish (a converged network): every term is 0
        g[:] = 0.0
    assert ncap.beff(acts, derivs, grads).degenerate
    tensors = [[tf.constant(a) for a in group] for group in (acts, derivs, grads)]
    assert float(beta_in_graph(*tensors)) == 0.0
