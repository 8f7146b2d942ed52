"""``ncap.tf.beff(model, x, y)`` (and ``ncap.beff`` on a model): closed form or autodiff."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..arrays import beff as beff_arrays
from ..arrays.result import BetaResult, assemble
from ..arrays.spec import Reduction, check_reduction, check_threads
from . import autodiff
from ._backend import tf
from .capture import (
    Capture,
    ProbeState,
    check_depth,
    derivatives,
    forward,
    get_chain,
    kernel_arrays,
)
from .chain import ProbeChain
from .options import INTERACTIONS, METHODS, Interaction, Method, check_flag, check_option


def beff(
    model: Any,
    x: Any,
    y: Any,
    *,
    method: Method = "auto",
    interaction: Interaction = "direct",
    reduction: Reduction = "batch",
    layers: Sequence[Any] | None = None,
    training: bool = False,
    loss: Any = None,
    seed: int | None = None,
    capture: Capture | None = None,
    compiled: bool = False,
    threads: int = 0,
) -> BetaResult:
    """beta_eff of a Keras model's probe on the batch (x, y).

    Args:
        method: ``"closed_form"`` (capture + the compiled kernel; Dense probes with
            elementwise layers between), ``"autodiff"`` (nested gradient tapes,
            SPEC section 5; Dense and Conv weight layers, anything sample-wise
            between) or ``"auto"`` (the closed form whenever it applies).
            ``result.method`` says which ran.
        interaction: ``"direct"`` (SPEC section 2) or ``"hessian"`` (the mixed
            blocks of the loss Hessian, SPEC section 4; autodiff only).
        reduction: ``"batch"`` or ``"sample"`` (one beta per sample).
        layers: names (or layers) of the probe's weight layers, input to output;
            default: the layers made by :func:`ncap.attach_probe`.
        training: BatchNorm batch statistics and active dropout (one mask) if
            True; moving statistics and no dropout if False (default).
        loss: the loss C (default: the compiled loss, else cross-entropy).
        seed: draw dropout masks from this seed instead of the layers' generators.
        capture: reuse a :class:`ncap.Capture` (same batch, statistics and masks)
            instead of a new forward pass; x and y are then ignored.
        compiled: run the autodiff tapes inside a ``tf.function`` (traced once per
            input shape and cached on the model).
        threads: CPU threads for the closed-form kernel (0 = all cores).

    Returns:
        :class:`ncap.BetaResult`, ``method`` and ``interaction`` set to what ran;
        ``info`` holds ``layers`` (weight layer names), ``training`` and ``loss``.

    Raises:
        ValueError: fewer than three hidden layers, no probe found, labels that
            do not match the output, an unsupported probe or interaction for the
            closed form, and unknown option values.
    """
    method = check_option(method, "method", METHODS)
    interaction = check_option(interaction, "interaction", INTERACTIONS)
    reduction = check_reduction(reduction)
    threads = check_threads(threads)
    training = check_flag(training, "training")
    compiled = check_flag(compiled, "compiled")
    chain = get_chain(model, layers)
    check_depth(chain)
    if method == "auto":
        method = "closed_form" if chain.closed_form_ok and interaction == "direct" else "autodiff"
    if method == "closed_form":
        if interaction == "hessian":
            raise ValueError(
                "interaction: the hessian interaction is computed by autodiff only; use "
                "method='autodiff' (or method='auto')"
            )
        chain.require_closed_form(
            "method", "ncap.beff(model, x, y, method='closed_form')", "use method='autodiff'"
        )
    if capture is not None:
        if not isinstance(capture, Capture):
            raise TypeError(f"capture: expected an ncap.Capture, got {type(capture).__name__}")
        if capture.layer_names != chain.layer_names:
            raise ValueError(
                f"capture: it was taken on layers {capture.layer_names}, but this model's probe "
                f"is {chain.layer_names}"
            )
        state = capture.state
    else:
        state = forward(chain, x, y, training=training, loss=loss, seed=seed)
    info = {
        "layers": chain.layer_names,
        "training": state.training,
        "loss": state.loss_fn.loss_name,
    }
    if method == "closed_form":
        if capture is not None:
            arrays = (capture.acts, capture.derivs, capture.grads)
        else:
            arrays = kernel_arrays(chain, state)
        result = beff_arrays(*arrays, reduction=reduction, threads=threads)
        return dataclasses.replace(
            result, method="closed_form", interaction="direct", info={**result.info, **info}
        )
    return _autodiff(chain, state, interaction, reduction, compiled, info)


def _device(t: Any) -> str:
    return "cuda" if "GPU" in (getattr(t, "device", "") or "").upper() else "cpu"


def _batch_terms_fn(chain: ProbeChain, interaction: str, compiled: bool, loss_fn: Any):
    if not compiled:
        return lambda *args: autodiff.batch_terms(chain, *args, loss_fn, interaction)
    key = ("autodiff", interaction, loss_fn.key)
    if key not in chain.traced:  # one traced function per loss, closing over it
        chain.traced[key] = tf.function(
            lambda z, a, records, g_last, labels: autodiff.batch_terms(
                chain, z, a, records, g_last, labels, loss_fn, interaction
            ),
            reduce_retracing=True,
        )
    return chain.traced[key]


def _autodiff(
    chain: ProbeChain,
    state: ProbeState,
    interaction: str,
    reduction: str,
    compiled: bool,
    info: dict,
) -> BetaResult:
    fn = _batch_terms_fn(chain, interaction, compiled, state.loss_fn)
    labels = tf.convert_to_tensor(state.labels)
    batch = int(state.z[0].shape[0])
    if reduction == "batch":
        nums, dens, abs_dens = fn(state.z, state.a, state.records, state.g_last, labels)
        nums = [float(v) for v in nums]
        dens = [float(v) for v in dens]
        fallback = float(sum(float(v) for v in abs_dens))
    else:
        per = []
        for b in range(batch):
            recs = autodiff.slice_records(state.records, b, batch)
            z_b = [t[b : b + 1] for t in state.z]
            a_b = [t[b : b + 1] for t in state.a]
            per.append(fn(z_b, a_b, recs, state.g_last[b : b + 1], labels[b : b + 1]))
        nums = [np.array([float(p[0][i]) for p in per]) for i in range(chain.n_layers)]
        dens = [np.array([float(p[1][i]) for p in per]) for i in range(chain.n_layers)]
        fallback = np.sum([[float(v) for v in p[2]] for p in per], axis=1)
    scale = _spec_scale(chain, state, reduction)
    if scale is None:  # general layers: no s to take norms of; |delta_in| stands in
        scale = fallback
    info = {**info, "scale": "spec" if chain.closed_form_ok else "abs_delta_in"}
    return _assemble(
        chain, nums, dens, scale, reduction, batch, interaction, _device(state.z[0]), info
    )


def _spec_scale(chain: ProbeChain, state: ProbeState, reduction: str):
    """SPEC section 3's scale (1/B) sum_b sum_l |z^{l-1}_b|_1 |s^l_b|_1 |g^{l+1}_b|_1."""
    if not chain.closed_form_ok:
        return None
    s = derivatives(chain, state)
    g = autodiff.backprop(chain, state.a, state.records, state.g_last)
    per_sample = 0.0
    for i in range(chain.n_layers - 1):
        zn = np.abs(state.z[i].numpy().astype(np.float64)).sum(axis=1)
        sn = np.abs(s[i].numpy().astype(np.float64)).sum(axis=1)
        gn = np.abs(g[i + 1].numpy().astype(np.float64)).sum(axis=1)
        per_sample = per_sample + zn * sn * gn
    return per_sample if reduction == "sample" else float(np.mean(per_sample))


def _assemble(
    chain: ProbeChain,
    nums: list,
    dens: list,
    scale: Any,
    reduction: str,
    batch: int,
    interaction: str,
    device: str,
    info: dict,
) -> BetaResult:
    shapes = [tuple(int(d) for d in w.kernel.shape) for w in chain.weights]
    fans = [(int(np.prod(s[:-1])), s[-1]) for s in shapes]
    return assemble(
        fans=fans,
        layer_numerators=nums,
        layer_denominators=dens,
        scale=scale,
        reduction=reduction,
        batch_size=batch,
        method="autodiff",
        interaction=interaction,
        device=device,
        info=info,
    )
