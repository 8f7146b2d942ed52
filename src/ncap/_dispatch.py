"""``ncap.beff``: one name for captured arrays (layer 1) and for Keras models (layer 2).

The package root is the only place that knows both layers; it forwards every
argument explicitly to :func:`ncap.arrays.beff` or :func:`ncap.tf.beff`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from .arrays import beff as beff_arrays
from .arrays.result import BetaResult
from .arrays.spec import Reduction

if TYPE_CHECKING:
    from .tf.capture import Capture

Method = Literal["auto", "closed_form", "autodiff"]
Interaction = Literal["direct", "hessian"]


def is_keras_model(obj: Any) -> bool:
    """Duck-typed, so that ``import ncap`` never imports TensorFlow."""
    return hasattr(obj, "layers") and hasattr(obj, "trainable_weights") and callable(obj)


@overload
def beff(
    acts: Sequence[Any],
    derivs: Sequence[Any],
    grads: Sequence[Any],
    *,
    reduction: Reduction = ...,
    threads: int = ...,
) -> BetaResult: ...


@overload
def beff(
    acts: Any,
    derivs: Any,
    grads: Any,
    *,
    reduction: Reduction = ...,
    threads: int = ...,
    method: Method = ...,
    interaction: Interaction = ...,
    layers: Sequence[Any] | None = ...,
    training: bool = ...,
    loss: Any = ...,
    seed: int | None = ...,
    capture: Capture | None = ...,
    compiled: bool = ...,
) -> BetaResult: ...


def beff(
    acts: Any,
    derivs: Any,
    grads: Any,
    *,
    reduction: Reduction = "batch",
    threads: int = 0,
    method: Method = "auto",
    interaction: Interaction = "direct",
    layers: Sequence[Any] | None = None,
    training: bool = False,
    loss: Any = None,
    seed: int | None = None,
    capture: Capture | None = None,
    compiled: bool = False,
) -> BetaResult:
    """Effective beta (neural capacitance) of a probe, docs/SPEC.md sections 2-5.

    Two ways to call it:

    ``ncap.beff(acts, derivs, grads)`` on captured arrays: the closed form in
    the compiled C++/CUDA core. ``acts`` has L arrays, ``derivs`` L-1 and
    ``grads`` L; see :func:`ncap.arrays.beff` for the layout.

    ``ncap.beff(model, x, y, method=..., interaction=..., layers=..., ...)`` on
    a Keras model with a probe (see :func:`ncap.attach_probe`); needs the ``tf``
    extra. See :func:`ncap.tf.beff` for the model options.

    Args:
        reduction: ``"batch"`` (beta of the batch's P; ``value`` is a float) or
            ``"sample"`` (one beta per sample; ``value`` is a length-B array).
        threads: CPU threads for the kernel, 0 for all cores. Results are
            bit-identical whatever the thread count.
        method, interaction, layers, training, loss, seed, capture, compiled:
            model path only (:func:`ncap.tf.beff`).

    Returns:
        :class:`ncap.BetaResult`; ``float(result)`` gives the batch beta.
    """
    if is_keras_model(acts):
        from .tf import beff as beff_model

        return beff_model(
            acts,
            derivs,
            grads,
            reduction=reduction,
            threads=threads,
            method=method,
            interaction=interaction,
            layers=layers,
            training=training,
            loss=loss,
            seed=seed,
            capture=capture,
            compiled=compiled,
        )
    model_only = {"layers": layers, "loss": loss, "seed": seed, "capture": capture}
    given = sorted(k for k, v in model_only.items() if v is not None)
    if training is not False:
        given.append("training")
    if compiled is not False:
        given.append("compiled")
    if given:
        raise TypeError(f"{', '.join(given)}: only for ncap.beff(model, x, y); got arrays")
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
