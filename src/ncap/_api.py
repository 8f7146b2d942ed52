"""``ncap.beff`` and ``ncap.degrees``: one entry point for arrays and for Keras models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._kernel import beff_arrays, degrees_arrays
from ._result import BetaResult


def _is_keras_model(obj: Any) -> bool:
    # Duck-typed so that `import ncap` never imports TensorFlow.
    return hasattr(obj, "layers") and hasattr(obj, "trainable_weights") and callable(obj)


def beff(
    acts: Any,
    derivs: Any,
    grads: Any,
    *,
    reduction: str = "batch",
    method: str = "auto",
    interaction: str = "direct",
    threads: int = 0,
    **model_options: Any,
) -> BetaResult:
    """Effective beta (neural capacitance) of a probe, SPEC sections 2-5.

    Two ways to call it:

    ``ncap.beff(acts, derivs, grads)`` on captured arrays (closed form, C++/CUDA):
        * ``acts[l]``: input of weight layer l+1, shape (B, n_l), l = 0..L-1
          (``acts[0]`` is the probe input z^0; ``acts[L-1]`` is unused).
        * ``derivs[l]``: elementwise derivative s^{l+1} between weight layers
          l+1 and l+2 (activation, BatchNorm scale and dropout mask folded in),
          shape (B, n_{l+1}), l = 0..L-2.
        * ``grads[l]``: per-sample gradient g^{l+1} of each sample's own loss at
          the pre-activation of weight layer l+1, shape (B, n_{l+1}),
          l = 0..L-1 (``grads[0]`` is unused).

        Arrays may be NumPy arrays, TensorFlow eager tensors or anything with
        ``__dlpack__`` or the buffer protocol; host memory is read without a
        copy (strided views included), CUDA memory goes to the CUDA kernel.
        float32 and float64 are accepted and accumulated in float64.

    ``ncap.beff(model, x, y, method="auto"|"closed_form"|"autodiff",
    interaction="direct"|"hessian")`` on a Keras model with a probe
    (see :func:`ncap.attach_probe`); needs TensorFlow.

    Args:
        reduction: ``"batch"`` (beta of the batch's P; ``value`` is a float) or
            ``"sample"`` (one beta per sample; ``value`` is a length-B array).
        threads: CPU threads for the kernel, 0 for all cores. Results are
            bit-identical whatever the thread count.

    Returns:
        :class:`ncap.BetaResult`; ``float(result)`` gives the batch beta.

    Raises:
        ValueError: shapes that do not chain, an empty batch, NaN/Inf, fewer than
            three hidden layers, and similar; the message names the argument.
        TypeError: integer, complex or other non-float dtypes; a stacked array
            where a list of layers is expected.
    """
    if _is_keras_model(acts):
        from .tf import beff_model

        return beff_model(
            acts, derivs, grads, reduction=reduction, method=method,
            interaction=interaction, **model_options,
        )
    if model_options:
        raise TypeError(f"unexpected keyword arguments for arrays: {sorted(model_options)}")
    if method not in ("auto", "closed_form"):
        raise ValueError(
            f"method: arrays are handled by the closed form only, got method={method!r} "
            "(autodiff needs the model: ncap.beff(model, x, y, method='autodiff'))"
        )
    if interaction != "direct":
        raise ValueError(
            f"interaction: arrays give the direct interaction only, got {interaction!r} "
            "(the hessian interaction needs the model and method='autodiff')"
        )
    return beff_arrays(acts, derivs, grads, reduction=reduction, threads=threads)


def degrees(
    acts: Sequence[Any], derivs: Sequence[Any], grads: Sequence[Any], *, threads: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Weighted degrees of the line graph, SPEC section 2, one pair per weight layer.

    Returns a list of L pairs ``(delta_in, delta_out)`` (float64) in the Keras
    kernel layout, shape (n_{l-1}, n_l) for weight layer l = 1..L.
    ``delta_out`` of layer 1 and ``delta_in`` of layer L are zero. Arguments
    are as in :func:`ncap.beff`; two weight layers are enough here.
    """
    return degrees_arrays(acts, derivs, grads, threads=threads)
