"""Running ``BetaEff``'s training step for the duration of one ``fit``, and never longer.

``fit`` calls ``model.make_train_function()``, then ``callbacks.on_train_begin()``,
then, for each execution, ``callbacks.on_train_batch_begin(...)`` followed by
``model.train_function(iterator)``. :func:`start` (from ``on_train_begin``) sets
``model.train_function`` to a :class:`GuardedTrainFunction`: it runs ncap's
step only when the callback armed it in ``on_train_batch_begin`` of the same
fit; called unarmed (a later ``fit``, ``train_on_batch`` or custom loop without
the callback, after a ``fit`` that raised before ``on_train_end``) it puts
Keras' own function back and runs that. ``on_train_end`` puts it back too.
``evaluate`` and ``predict`` never reach any of this.

The traced step is cached on the model per configuration and compile state, so
a new callback per ``fit`` reuses it (no retrace) and it dies with the model.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ._backend import keras
from .capture import check_depth
from .chain import get_chain, model_cache
from .losses import check_batch_mean_loss
from .recorder import UNKNOWN_EPOCH_CAPACITY, StepRecorder
from .train_step import make_train_step


def compile_token(model: Any) -> tuple:
    """The objects a traced step depends on; ``compile()`` makes new ones (new metrics)."""
    return (
        model.optimizer,
        *model.metrics,
        model.steps_per_execution,
        bool(model.run_eagerly),
        model.jit_compile,
        model.distribute_strategy,
    )


def _same(a: tuple, b: tuple) -> bool:
    """Element by element: the same objects, or equal plain values (flags, counts)."""
    plain = (bool, int, str, type(None))

    def same(x: Any, y: Any) -> bool:
        return x is y or (isinstance(x, plain) and type(x) is type(y) and x == y)

    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))


@dataclass
class StepEntry:
    """A traced training step with its recorder, for one model and configuration."""

    token: tuple
    recorder: StepRecorder
    function: Any  # Keras' train function around ncap's step


def _keras_train_function(model: Any, step: Any) -> Any:
    """Keras' train function (tf.function, steps_per_execution loop, distribution) around ``step``.

    ``make_train_function`` wraps whatever ``model.train_step`` is; the instance
    attribute exists only for this call.
    """
    saved = model.train_function
    model.train_step = step
    try:
        model.make_train_function(force=True)
        return model.train_function
    finally:
        del model.train_step
        model.train_function = saved


def _check_model(model: Any, chain: Any) -> None:
    check_depth(chain)
    chain.require_closed_form(
        "model",
        "BetaEff",
        "for other probes call ncap.beff(model, x, y, method='autodiff') between epochs",
    )
    check_batch_mean_loss(model)
    if type(model).train_step is not keras.Model.train_step:
        raise ValueError(
            f"model: {type(model).__name__} overrides train_step; BetaEff runs Keras' own "
            "training step with the capture added and would replace yours. Record beta with "
            "ncap.beff(model, x, y, training=True) instead"
        )


def _entry(model: Any, every: int, reduction: str, layers: Sequence[Any] | None, need: int):
    chain = get_chain(model, layers)
    _check_model(model, chain)
    token = compile_token(model)
    cache = model_cache(model)
    steps = cache.train_steps if cache is not None else {}
    key = (every, reduction, chain.layer_names)
    entry = steps.get(key)
    if entry is None or not _same(entry.token, token) or entry.recorder.capacity < need:
        recorder = StepRecorder(model, every, reduction, need)
        function = _keras_train_function(model, make_train_step(model, chain, recorder.record))
        entry = steps[key] = StepEntry(token, recorder, function)
    return entry


class GuardedTrainFunction:
    """``model.train_function`` during a fit with ``BetaEff``: ncap's step when armed."""

    def __init__(self, model: Any, function: Any, original: Any, params: Any) -> None:
        self._model = weakref.ref(model)
        self._function = function
        self.original = original
        self.params = params  # the fit's params dict: one per CallbackList, i.e. per fit
        self._armed = False

    def arm(self) -> None:
        self._armed = True

    def __call__(self, iterator: Any) -> Any:
        if self._armed:
            self._armed = False
            return self._function(iterator)
        # Not called by the fit that installed it: that fit ended without on_train_end.
        self.release()
        model = self._model()
        if model.train_function is None:
            model.make_train_function()
        return model.train_function(iterator)

    def release(self) -> None:
        """Put Keras' own train function back (if this one is still installed)."""
        model = self._model()
        if model is not None and model.train_function is self:
            model.train_function = self.original
        self._armed = False


def start(
    model: Any,
    *,
    every: int,
    reduction: str,
    layers: Sequence[Any] | None,
    params: dict | None,
) -> tuple[StepRecorder, GuardedTrainFunction]:
    """Install ncap's step on ``model`` for this fit; returns its recorder and the guard."""
    current = model.train_function
    if isinstance(current, GuardedTrainFunction):
        if params is not None and current.params is params:
            raise ValueError(
                "callbacks: two BetaEff callbacks record the same fit; pass one (protocol='both' "
                "records both protocols)"
            )
        current.release()  # left over from a fit that raised
    steps = (params or {}).get("steps")
    need = int(steps) if steps else UNKNOWN_EPOCH_CAPACITY
    entry = _entry(model, every, reduction, layers, need)
    entry.recorder.reset()
    guard = GuardedTrainFunction(model, entry.function, model.train_function, params)
    model.train_function = guard
    return entry.recorder, guard
