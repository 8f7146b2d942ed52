"""Baselines that predict a candidate's final accuracy from its own curve only.

SPEC section 6: last seen value, best seen value, a parametric learning-curve
extrapolation (a few saturating families fitted to the observed validation
accuracies, the best by BIC, read off at the final epoch) and LogME (a
zero-training score from the backbone's features, :mod:`ncap.logme`).

Epochs are counted from 1 here: ``val_acc[i]`` is the accuracy after epoch
``t = i + 1`` and ``final_epoch`` is the epoch count at which the
extrapolated curve is read.

Curve families (``t`` the 1-based epoch, ``a`` the asymptote as t -> inf)::

    pow3       a - b * t**(-c)                      (3 parameters)
    exp3       a - b * exp(-c * (t - 1))            (3)
    log_power  a / (1 + (t / exp(b))**(-c))          (3)
    janoschek  a - (a - b) * exp(-c * t**d)         (4)
    mmf        a - (a - b) / (1 + (c * t)**d)        (4)

Each is fitted by ``scipy.optimize.curve_fit`` (trust-region reflective, box
bounds, a few starting points) and scored with the Gaussian BIC of the
least-squares fit::

    BIC = n * log(max(RSS / n, floor)) + (p + 1) * log(n)

with ``p`` the curve's parameters, ``+1`` the noise variance, and
``floor = 1e-12 * max(1, mean(y**2))`` so that curves fitting the points
exactly tie and the simpler family wins. A family is fitted only when
``n >= p + 1`` observations exist. The asymptote is bounded by
``value_range`` (default (0, 1): accuracies as fractions) and the value read
off is clipped to it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .logme import logme

__all__ = [
    "CurveFit",
    "FAMILIES",
    "best_seen",
    "curve_extrapolation",
    "last_seen",
    "logme",
]

_VAR_FLOOR_REL = 1e-12


def _as_curve(values: Any, name: str) -> np.ndarray:
    """Validate a per-epoch curve: 1-D, non-empty, finite float64 (a copy)."""
    try:
        arr = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a 1-D sequence of numbers ({exc})") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per epoch), got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty: at least one epoch is needed")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(
            f"{name} contains NaN or Inf at epoch index(es) {np.flatnonzero(bad).tolist()}"
        )
    return arr


def last_seen(val_acc: ArrayLike | Sequence[float]) -> float:
    """The last observed validation accuracy."""
    return float(_as_curve(val_acc, "val_acc")[-1])


def best_seen(val_acc: ArrayLike | Sequence[float]) -> float:
    """The best (largest) observed validation accuracy."""
    return float(_as_curve(val_acc, "val_acc").max())


# --- learning-curve families ------------------------------------------------


def _pow3(t: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a - b * t ** (-c)


def _exp3(t: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a - b * np.exp(-c * (t - 1.0))


def _log_power(t: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a / (1.0 + (t / math.exp(b)) ** (-c))


def _janoschek(t: np.ndarray, a: float, b: float, c: float, d: float) -> np.ndarray:
    return a - (a - b) * np.exp(-c * t**d)


def _mmf(t: np.ndarray, a: float, b: float, c: float, d: float) -> np.ndarray:
    return a - (a - b) / (1.0 + (c * t) ** d)


@dataclass(frozen=True)
class _Family:
    name: str
    func: Callable[..., np.ndarray]
    params: tuple[str, ...]
    # (lo, hi, span, y) -> (lower bounds, upper bounds, list of starting points)
    setup: Callable[[float, float, float, np.ndarray], tuple[list, list, list]]


def _asym_start(lo: float, hi: float, y: np.ndarray) -> float:
    # Slightly above the last value (a learning curve usually still rises),
    # kept strictly inside the bounds.
    pad = 1e-6 * max(hi - lo, 1e-12)
    return float(np.clip(y[-1] + 0.05 * (hi - lo), lo + pad, hi - pad))


def _setup_3(c_lo: float, c_hi: float, c_starts: tuple[float, ...]):
    def setup(lo: float, hi: float, span: float, y: np.ndarray):
        a0 = _asym_start(lo, hi, y)
        b0 = float(np.clip(a0 - y[0], -span * 0.999, span * 0.999))
        starts = [[a0, b0, c] for c in c_starts]
        return [lo, -span, c_lo], [hi, span, c_hi], starts

    return setup


def _setup_log_power(lo: float, hi: float, span: float, y: np.ndarray):
    a0 = _asym_start(lo, hi, y)
    starts = [[a0, b, c] for b in (0.0, 1.5) for c in (1.0,)]
    return [lo, -10.0, 1e-3], [hi, 10.0, 10.0], starts


def _setup_4(c_lo: float, c_hi: float, c_starts: tuple[float, ...]):
    def setup(lo: float, hi: float, span: float, y: np.ndarray):
        a0 = _asym_start(lo, hi, y)
        b0 = float(np.clip(y[0] - 0.5 * (y[-1] - y[0]), lo - span * 0.999, hi + span * 0.999))
        starts = [[a0, b0, c, d] for c in c_starts for d in (0.5, 1.0)]
        return [lo, lo - span, c_lo, 1e-2], [hi, hi + span, c_hi, 5.0], starts

    return setup


FAMILIES: tuple[_Family, ...] = (
    _Family("pow3", _pow3, ("a", "b", "c"), _setup_3(1e-3, 10.0, (0.5, 1.0, 2.0))),
    _Family("exp3", _exp3, ("a", "b", "c"), _setup_3(1e-4, 10.0, (0.1, 0.5, 1.5))),
    _Family("log_power", _log_power, ("a", "b", "c"), _setup_log_power),
    _Family("janoschek", _janoschek, ("a", "b", "c", "d"), _setup_4(1e-4, 10.0, (0.1, 1.0))),
    _Family("mmf", _mmf, ("a", "b", "c", "d"), _setup_4(1e-3, 100.0, (0.3, 1.0))),
)
"""The curve families tried by :func:`curve_extrapolation`, in order."""


@dataclass(frozen=True)
class CurveFit:
    """The extrapolated learning curve of one candidate.

    Attributes:
        value: the curve read off at ``final_epoch`` (clipped to ``value_range``),
            or the last seen accuracy when ``fallback`` is True.
        family: name of the chosen family, or ``"last_seen"`` on fallback.
        params: the fitted parameters by name (empty on fallback).
        bic: BIC of the chosen fit (NaN on fallback).
        final_epoch: the 1-based epoch the value was read at.
        fallback: True when no family could be fitted.
        note: why the fit fell back (None otherwise).
        bic_by_family: BIC of every family tried (NaN when it failed or was
            not eligible for lack of points).
        curve: the fitted curve as a function of the 1-based epoch.
    """

    value: float
    family: str
    params: dict[str, float]
    bic: float
    final_epoch: int
    fallback: bool = False
    note: str | None = None
    bic_by_family: dict[str, float] = field(default_factory=dict)
    curve: Callable[[ArrayLike], np.ndarray] = field(default=None, repr=False, compare=False)

    def __float__(self) -> float:
        return float(self.value)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (NaN BICs become None)."""

        def num(v: float) -> float | None:
            return None if not math.isfinite(v) else float(v)

        return {
            "value": float(self.value),
            "family": self.family,
            "params": {k: float(v) for k, v in self.params.items()},
            "bic": num(self.bic),
            "final_epoch": int(self.final_epoch),
            "fallback": bool(self.fallback),
            "note": self.note,
            "bic_by_family": {k: num(v) for k, v in self.bic_by_family.items()},
        }


def _bic(rss: float, n: int, n_params: int, floor: float) -> float:
    return n * math.log(max(rss / n, floor)) + (n_params + 1) * math.log(n)


def _fit_family(
    fam: _Family, t: np.ndarray, y: np.ndarray, lo: float, hi: float, span: float
) -> tuple[np.ndarray, float] | None:
    """Least-squares fit of one family from several starts: (params, rss) or None."""
    from scipy.optimize import OptimizeWarning, curve_fit

    lower, upper, starts = fam.setup(lo, hi, span, y)
    best: tuple[np.ndarray, float] | None = None
    for p0 in starts:
        p0 = np.clip(p0, lower, upper)
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                popt, _ = curve_fit(
                    fam.func, t, y, p0=p0, bounds=(lower, upper), method="trf", max_nfev=2000
                )
        except (RuntimeError, ValueError, FloatingPointError):
            continue
        with np.errstate(all="ignore"):
            resid = y - fam.func(t, *popt)
        rss = float(resid @ resid)
        if not (np.all(np.isfinite(popt)) and math.isfinite(rss)):
            continue
        if best is None or rss < best[1]:
            best = (popt, rss)
    return best


def curve_extrapolation(
    val_acc: ArrayLike | Sequence[float],
    final_epoch: int,
    *,
    value_range: tuple[float, float] | None = (0.0, 1.0),
) -> CurveFit:
    """Extrapolate the validation-accuracy curve to ``final_epoch`` (best family by BIC).

    Args:
        val_acc: per-epoch validation accuracy; ``val_acc[i]`` is epoch ``i + 1``.
        final_epoch: 1-based epoch count at which to read the fitted curve
            (usually the planned length of fine-tuning), >= 1.
        value_range: bounds of a valid accuracy: the asymptote is fitted
            inside it and the value read off is clipped to it. ``None`` for
            unbounded data (then the asymptote is bounded to 10 times the
            observed spread around the data).

    Returns:
        A :class:`CurveFit`. When no family can be fitted (fewer than 4 epochs,
        or every fit failed) it holds the last seen value with
        ``fallback=True`` and the reason in ``note``.

    Raises:
        TypeError: ``final_epoch`` not an int; non-numeric ``val_acc``.
        ValueError: ``val_acc`` not 1-D, empty or with NaN/Inf, outside
            ``value_range``; ``final_epoch < 1``; bad ``value_range``.
    """
    y = _as_curve(val_acc, "val_acc")
    if isinstance(final_epoch, bool) or not isinstance(final_epoch, (int, np.integer)):
        raise TypeError(f"final_epoch must be an int, got {type(final_epoch).__name__}")
    final_epoch = int(final_epoch)
    if final_epoch < 1:
        raise ValueError(f"final_epoch must be >= 1 (epochs are counted from 1), got {final_epoch}")
    n = y.shape[0]

    if value_range is None:
        spread = max(float(np.ptp(y)), 1e-3 * max(1.0, float(np.abs(y).max())))
        lo, hi = float(y.min()) - 10.0 * spread, float(y.max()) + 10.0 * spread
    else:
        try:
            lo, hi = (float(v) for v in value_range)
        except (TypeError, ValueError):
            raise ValueError(
                f"value_range must be a (low, high) pair of numbers or None, got {value_range!r}"
            ) from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"value_range must be finite with low < high, got {value_range!r}")
        if y.min() < lo or y.max() > hi:
            raise ValueError(
                f"val_acc has values outside value_range={value_range!r} "
                f"(min {y.min():g}, max {y.max():g}); pass value_range=None or the "
                "right bounds (e.g. (0, 100) for percentages)"
            )
    span = hi - lo
    t = np.arange(1, n + 1, dtype=np.float64)
    floor = _VAR_FLOOR_REL * max(1.0, float(np.mean(y**2)))

    def clip(v: np.ndarray) -> np.ndarray:
        return np.clip(v, lo, hi) if value_range is not None else v

    bics: dict[str, float] = {}
    best: tuple[float, _Family, np.ndarray] | None = None
    for fam in FAMILIES:
        p = len(fam.params)
        if n < p + 1:
            bics[fam.name] = math.nan
            continue
        fit = _fit_family(fam, t, y, lo, hi, span)
        if fit is None:
            bics[fam.name] = math.nan
            continue
        popt, rss = fit
        bic = _bic(rss, n, p, floor)
        bics[fam.name] = bic
        if best is None or bic < best[0]:
            best = (bic, fam, popt)

    if best is None:
        last = float(y[-1])
        if n < 4:
            note = f"only {n} epoch(s) observed; every curve family needs at least 4"
        else:
            note = "no curve family could be fitted"
        return CurveFit(
            value=last,
            family="last_seen",
            params={},
            bic=math.nan,
            final_epoch=final_epoch,
            fallback=True,
            note=note + "; reporting the last seen value",
            bic_by_family=bics,
            curve=lambda e: np.full(np.shape(e), last, dtype=np.float64),
        )

    bic, fam, popt = best
    params = tuple(float(v) for v in popt)

    def curve(epochs: ArrayLike, _f=fam.func, _p=params) -> np.ndarray:
        with np.errstate(all="ignore"):
            return clip(_f(np.asarray(epochs, dtype=np.float64), *_p))

    value = float(curve(np.array([float(final_epoch)]))[0])
    return CurveFit(
        value=value,
        family=fam.name,
        params=dict(zip(fam.params, params, strict=False)),
        bic=float(bic),
        final_epoch=final_epoch,
        bic_by_family=bics,
        curve=curve,
    )
