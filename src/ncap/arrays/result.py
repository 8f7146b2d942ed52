"""Result types returned by :func:`ncap.beff`, and the one place they are built."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .spec import degenerate_ratio

Scalar = float | np.ndarray


class LayerTerms(NamedTuple):
    """One weight layer's share of beta_eff (SPEC section 3).

    ``layer`` counts weight layers from 1 (the first probe Dense) to L (the
    output layer). ``numerator`` is ``delta_out(W^l) . delta_in(W^l)`` (zero for
    l = 1 and l = L), ``denominator`` is ``1 . delta_in(W^l)`` (zero for l = L).
    Both are floats for ``reduction="batch"`` and length-B arrays for ``"sample"``.
    """

    layer: int
    fan_in: int
    fan_out: int
    numerator: Scalar
    denominator: Scalar


@dataclass(frozen=True)
class BetaResult:
    """beta_eff with the terms it was computed from.

    ``value`` is a float for ``reduction="batch"`` and a float64 array of
    length B for ``reduction="sample"``; ``numerator``, ``denominator``,
    ``scale`` and ``degenerate`` have the same shape. ``degenerate`` is True
    where the denominator vanished relative to ``scale`` (SPEC section 3) and
    ``value`` was then reported as 0.
    """

    value: Scalar
    numerator: Scalar
    denominator: Scalar
    scale: Scalar
    degenerate: bool | np.ndarray
    per_layer: tuple[LayerTerms, ...]
    reduction: str
    batch_size: int
    method: str = "closed_form"
    interaction: str = "direct"
    device: str = "cpu"
    info: dict = field(default_factory=dict, compare=False)

    def __float__(self) -> float:
        if self.reduction != "batch":
            raise TypeError(
                "float(result) needs reduction='batch'; this result holds one beta per "
                "sample (result.value is an array)"
            )
        return float(self.value)

    def __repr__(self) -> str:
        if self.reduction == "batch":
            head = f"BetaResult(value={float(self.value):.6g}, degenerate={bool(self.degenerate)}"
        else:
            v = np.asarray(self.value)
            head = (
                f"BetaResult(value=array(shape={v.shape}, mean={v.mean():.6g}), "
                f"degenerate={int(np.sum(self.degenerate))} of {v.size}"
            )
        return (
            f"{head}, reduction={self.reduction!r}, method={self.method!r}, "
            f"interaction={self.interaction!r}, device={self.device!r}, "
            f"layers={len(self.per_layer)}, batch_size={self.batch_size})"
        )

    def table(self) -> str:
        """The per-layer terms as a small text table (batch reduction: values;
        sample reduction: means over samples)."""
        rows = [f"{'layer':>5} {'fan_in':>7} {'fan_out':>7} {'numerator':>14} {'denominator':>14}"]
        for t in self.per_layer:
            num = float(np.mean(t.numerator))
            den = float(np.mean(t.denominator))
            rows.append(f"{t.layer:>5} {t.fan_in:>7} {t.fan_out:>7} {num:>14.6g} {den:>14.6g}")
        return "\n".join(rows)


def assemble(
    *,
    fans: Sequence[tuple[int, int]],
    layer_numerators: Sequence[Any],
    layer_denominators: Sequence[Any],
    scale: Scalar,
    reduction: str,
    batch_size: int,
    method: str = "closed_form",
    interaction: str = "direct",
    device: str = "cpu",
    info: dict | None = None,
    totals: tuple[Any, Any, Any, Any] | None = None,
) -> BetaResult:
    """Build a :class:`BetaResult` from per-layer terms (every path ends here).

    ``fans[l-1]`` is (fan-in, fan-out) of weight layer l. ``totals`` = (value, numerator,
    denominator, degenerate) when the compiled kernel already applied the
    SPEC's ratio rule; otherwise the totals are summed here and the rule of
    :func:`ncap.arrays.spec.degenerate_ratio` is applied.
    """
    per_layer = tuple(
        LayerTerms(i + 1, int(fan_in), int(fan_out), layer_numerators[i], layer_denominators[i])
        for i, (fan_in, fan_out) in enumerate(fans)
    )
    if totals is None:
        if reduction == "batch":
            num = float(sum(float(v) for v in layer_numerators))
            den = float(sum(float(v) for v in layer_denominators))
            scale = float(scale)
        else:
            num = np.sum(np.asarray(layer_numerators, dtype=np.float64), axis=0)
            den = np.sum(np.asarray(layer_denominators, dtype=np.float64), axis=0)
            scale = np.asarray(scale, dtype=np.float64)
        value, degenerate = degenerate_ratio(num, den, scale)
    else:
        value, num, den, degenerate = totals
    return BetaResult(
        value=value,
        numerator=num,
        denominator=den,
        scale=scale,
        degenerate=degenerate,
        per_layer=per_layer,
        reduction=reduction,
        batch_size=int(batch_size),
        method=method,
        interaction=interaction,
        device=device,
        info=dict(info or {}),
    )
