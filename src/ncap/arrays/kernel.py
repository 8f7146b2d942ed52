"""``beff`` and ``degrees`` on captured arrays: checks, device dispatch, the compiled call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .convert import (
    as_layer_list,
    check_layer_counts,
    is_cuda_array,
    is_ready_host_array,
    refuse_foreign_non_float,
    to_host_array,
)
from .result import BetaResult, assemble
from .spec import MIN_BETA_LAYERS, MIN_DEGREE_LAYERS, Reduction, check_reduction, check_threads


def _backend(acts: list, derivs: list, grads: list):
    """The compiled module for where the arrays live (all on the host, or all on one GPU)."""
    on_gpu = [is_cuda_array(x) for x in (*acts, *derivs, *grads)]
    if not any(on_gpu):
        from .. import _core

        return _core, "cpu"
    if not all(on_gpu):
        raise ValueError(
            "acts/derivs/grads: some arrays are on a CUDA device and some on the host; "
            "put them all in one place"
        )
    from .cuda import cuda_module

    return cuda_module(), "cuda"


def _prepare(acts: Any, derivs: Any, grads: Any, min_layers: int):
    acts = as_layer_list(acts, "acts")
    derivs = as_layer_list(derivs, "derivs")
    grads = as_layer_list(grads, "grads")
    check_layer_counts(acts, derivs, grads, min_layers)
    if (
        all(map(is_ready_host_array, acts))
        and all(map(is_ready_host_array, derivs))
        and all(map(is_ready_host_array, grads))
    ):
        from .. import _core  # the common case, kept cheap: ncap.beff runs every training step

        return _core, "cpu", acts, derivs, grads
    for part, arrays in (("acts", acts), ("derivs", derivs), ("grads", grads)):
        for i, x in enumerate(arrays):  # before any DLPack call: TF aborts on string tensors
            refuse_foreign_non_float(x, f"{part}[{i}]")
    backend, device = _backend(acts, derivs, grads)
    if device == "cpu":
        acts = [to_host_array(a, f"acts[{i}]") for i, a in enumerate(acts)]
        derivs = [to_host_array(a, f"derivs[{i}]") for i, a in enumerate(derivs)]
        grads = [to_host_array(a, f"grads[{i}]") for i, a in enumerate(grads)]
    return backend, device, acts, derivs, grads


def beff(
    acts: Sequence[Any],
    derivs: Sequence[Any],
    grads: Sequence[Any],
    *,
    reduction: Reduction = "batch",
    threads: int = 0,
) -> BetaResult:
    """Closed-form beta_eff (docs/SPEC.md section 3) of one captured batch.

    * ``acts[l]``: input of weight layer l+1, shape (B, n_l), l = 0..L-1
      (``acts[0]`` is the probe input z^0; ``acts[L-1]`` is unused): L arrays.
    * ``derivs[l]``: elementwise derivative s^{l+1} between weight layers l+1
      and l+2 (activation, BatchNorm scale and dropout mask folded in), shape
      (B, n_{l+1}), l = 0..L-2: L-1 arrays.
    * ``grads[l]``: per-sample gradient g^{l+1} of each sample's own loss at the
      pre-activation of weight layer l+1, shape (B, n_{l+1}), l = 0..L-1
      (``grads[0]`` is unused): L arrays.

    Arrays may be NumPy arrays, TensorFlow eager tensors or anything with
    ``__dlpack__`` or the buffer protocol; host memory is read without a copy
    (strided views included), CUDA memory goes to the CUDA kernel. float16,
    float32 and float64 are accepted and accumulated in float64.

    Args:
        reduction: ``"batch"`` (beta of the batch's P; ``value`` is a float) or
            ``"sample"`` (one beta per sample; ``value`` is a length-B array).
        threads: CPU threads for the kernel, 0 for all cores. Results are
            bit-identical whatever the thread count.

    Raises:
        ValueError: shapes that do not chain, an empty batch, NaN/Inf, fewer than
            three hidden layers, and similar; the message names the argument.
        TypeError: integer, complex or other non-float dtypes; a stacked array
            where a list of layers is expected.
    """
    reduction = check_reduction(reduction)
    threads = check_threads(threads)
    backend, device, acts, derivs, grads = _prepare(acts, derivs, grads, MIN_BETA_LAYERS)
    raw = backend.beff(acts, derivs, grads, reduction == "sample", threads)
    # The bindings return floats (batch) or float64 arrays (sample) already.
    return assemble(
        fans=list(zip(raw["widths"][:-1], raw["widths"][1:], strict=False)),
        layer_numerators=raw["layer_numerator"],
        layer_denominators=raw["layer_denominator"],
        scale=raw["scale"],
        reduction=reduction,
        batch_size=raw["batch_size"],
        device=device,
        totals=(raw["value"], raw["numerator"], raw["denominator"], raw["degenerate"]),
    )


def degrees(
    acts: Sequence[Any], derivs: Sequence[Any], grads: Sequence[Any], *, threads: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Weighted degrees of the line graph, docs/SPEC.md section 2, one pair per weight layer.

    Returns a list of L pairs ``(delta_in, delta_out)`` (float64) in the Keras
    kernel layout, shape (n_{l-1}, n_l) for weight layer l = 1..L.
    ``delta_out`` of layer 1 and ``delta_in`` of layer L are zero. Arguments
    are as in :func:`ncap.arrays.beff`; two weight layers are enough here.
    """
    threads = check_threads(threads)
    backend, _, acts, derivs, grads = _prepare(acts, derivs, grads, MIN_DEGREE_LAYERS)
    return [tuple(pair) for pair in backend.degrees(acts, derivs, grads, threads)]
