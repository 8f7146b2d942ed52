"""beta_eff and degrees from captured arrays: checks, device dispatch, result assembly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._arrays import as_layer_list, check_layer_counts, is_cuda_array, to_host_array
from ._result import BetaResult, LayerTerms

REDUCTIONS = ("batch", "sample")


def _backend(acts: list, derivs: list, grads: list):
    """The compiled module for where the arrays live (all on the host, or all on one GPU)."""
    on_gpu = [is_cuda_array(x) for x in (*acts, *derivs, *grads)]
    if not any(on_gpu):
        from . import _core

        return _core, "cpu"
    if not all(on_gpu):
        raise ValueError(
            "acts/derivs/grads: some arrays are on a CUDA device and some on the host; "
            "put them all in one place"
        )
    from ._cuda import cuda_module

    return cuda_module(), "cuda"


def _prepare(acts: Any, derivs: Any, grads: Any, min_layers: int):
    acts = as_layer_list(acts, "acts")
    derivs = as_layer_list(derivs, "derivs")
    grads = as_layer_list(grads, "grads")
    check_layer_counts(acts, derivs, grads, min_layers)
    backend, device = _backend(acts, derivs, grads)
    if device == "cpu":
        acts = [to_host_array(a, f"acts[{i}]") for i, a in enumerate(acts)]
        derivs = [to_host_array(a, f"derivs[{i}]") for i, a in enumerate(derivs)]
        grads = [to_host_array(a, f"grads[{i}]") for i, a in enumerate(grads)]
    return backend, device, acts, derivs, grads


def beff_arrays(
    acts: Sequence[Any],
    derivs: Sequence[Any],
    grads: Sequence[Any],
    *,
    reduction: str = "batch",
    threads: int = 0,
) -> BetaResult:
    """Closed-form beta_eff (SPEC section 3) of a captured batch. See :func:`ncap.beff`."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    if not isinstance(threads, (int, np.integer)) or threads < 0:
        raise ValueError(f"threads: expected an integer >= 0 (0 = all cores), got {threads!r}")
    backend, device, acts, derivs, grads = _prepare(acts, derivs, grads, min_layers=4)
    raw = backend.beff(acts, derivs, grads, reduction == "sample", int(threads))
    return _assemble(raw, reduction, device)


def _assemble(raw: dict, reduction: str, device: str) -> BetaResult:
    # The bindings already return floats (batch) or float64 arrays (sample).
    widths = raw["widths"]  # n_0 .. n_L
    numerators, denominators = raw["layer_numerator"], raw["layer_denominator"]
    per_layer = tuple(
        LayerTerms(i + 1, widths[i], widths[i + 1], numerators[i], denominators[i])
        for i in range(len(widths) - 1)
    )
    return BetaResult(
        value=raw["value"],
        numerator=raw["numerator"],
        denominator=raw["denominator"],
        scale=raw["scale"],
        degenerate=raw["degenerate"],
        per_layer=per_layer,
        reduction=reduction,
        batch_size=raw["batch_size"],
        device=device,
    )


def degrees_arrays(
    acts: Sequence[Any], derivs: Sequence[Any], grads: Sequence[Any], *, threads: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-layer ``(delta_in, delta_out)`` (SPEC section 2). See :func:`ncap.degrees`."""
    backend, _, acts, derivs, grads = _prepare(acts, derivs, grads, min_layers=2)
    return [tuple(pair) for pair in backend.degrees(acts, derivs, grads, int(threads))]
