"""Predict a candidate's final accuracy from its first epochs (SPEC section 6).

The paper (section 4.4, Appendix E) fits the validation accuracy as a linear
function of the training-set beta_eff, ``acc = h(beta)``, by Bayesian ridge
regression on ``k`` consecutive epochs, and reads the final accuracy off at
``beta = 0`` (beta_eff vanishes when training has converged).

Epochs are indexed from 0: ``beta[i]`` and ``val_acc[i]`` are the values
measured after the (i+1)-th epoch of fine-tuning, and the window starting at
``t0`` covers the entries ``t0 .. t0 + k - 1``.

Choosing ``t0`` (SPEC section 6). Among the windows that fit in the observed
epochs, the eligible one with the smallest ::

    BIC_z = n ln(RSS / SS_y) + p ln n,     n = k, p = 3 (slope, intercept, noise)

wins, where RSS is the sum of squared residuals of the fitted (posterior-mean)
line on the window and SS_y the window's own sum of squares of accuracy about
its mean: the Gaussian BIC of the line on the standardised window, scale-free
and at most ``p ln n``. A window whose accuracies span less than one
validation sample (``max - min < 1 / n_val``) is not eligible: the line is
undetermined there, and a window flat at chance level would otherwise win with
RSS = 0. (Accuracies are counts over ``n_val``, so a span is 0 or at least one
sample; the test is against half a sample, which float32 rounding cannot cross.)
Ties (within :data:`BIC_TIE`) go to the later window. If no window is eligible
the last one is used and the prediction is flagged. ``RSS / SS_y`` is floored
at :data:`RSS_RATIO_FLOOR`: a line that explains all but a billionth of the
window's variation fits it exactly (every 2-epoch window does), and the digits
below that are the prior's shrinkage, which must not rank windows.

A prediction is a probability: ``h(0)`` outside [0, 1] is reported clipped,
with the raw value kept and a flag. Every :class:`Prediction` carries
``flags``, short codes from :data:`FLAGS`, which also holds the text a report
shows for each: clipped, below the best accuracy already observed, no eligible
window (or a given window that is not), never left chance level (best accuracy
at most ``1/C + 2 sqrt(p(1-p)/n_val)``, ``p = 1/C``: :func:`chance_threshold`),
beta not decreasing over the window (its least-squares slope against the epoch
is not negative).

Fewer than ``k`` observed epochs is an error (the caller chooses a smaller
``k``); no window is shrunk silently.

Units: beta_eff carries the loss's scale (SPEC section 1: beta(cP) = c beta(P))
and scikit-learn's ``BayesianRidge`` is not equivariant to the units of its
data (its Gamma hyperpriors and start values are absolute). So each window is
fitted on ``x / sx`` and ``y / sy`` with ``sx``, ``sy`` the window's standard
deviations (1 when zero), and everything is reported back in the original
units: the prediction does not change when beta is rescaled.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.linear_model import BayesianRidge

from .baselines import _as_curve

__all__ = ["FLAGS", "Prediction", "chance_threshold", "predict_final", "window_bic"]

#: Free parameters in the BIC: slope, intercept and the noise precision.
N_PARAMS = 3
#: Two windows whose BIC_z differ by less than this tie (and the later one wins).
BIC_TIE = 1e-9
#: RSS / SS_y below this counts as an exact fit: smaller ratios are rounding and the
#: prior's shrinkage, not evidence (every 2-epoch window fits exactly, so they tie).
RSS_RATIO_FLOOR = 1e-9
#: "Within noise of chance": this many binomial standard deviations at n_val above 1/classes.
CHANCE_SIGMAS = 2.0

#: Every flag a prediction can carry: code -> the text a report shows for it.
FLAGS: dict[str, str] = {
    "clipped": "h(0) lies outside [0, 1]; the reported value is clipped to it (raw value kept)",
    "below_best_seen": "the prediction is below the best validation accuracy already observed",
    "no_eligible_window": (
        "no window's accuracies span one validation sample (1/n_val), so h is undetermined; "
        "the last window was used"
    ),
    "window_not_eligible": (
        "the given window's accuracies span less than one validation sample (1/n_val), "
        "so h is undetermined there"
    ),
    "at_chance": (
        f"never left chance level in the observed epochs (best validation accuracy within "
        f"{CHANCE_SIGMAS:g} binomial std at n_val of 1/num_classes)"
    ),
    "beta_not_decreasing": "beta_eff does not decrease over the fitted window",
}


@dataclass(frozen=True, eq=False)
class Prediction:
    """The Bayesian-ridge prediction of one candidate's final accuracy.

    Attributes:
        predicted: h(0) clipped to [0, 1], the predicted final accuracy.
        raw_predicted: h(0) as fitted (differs from ``predicted`` only when
            flagged ``"clipped"``).
        std: posterior predictive standard deviation of h(0) given the window
            (the line's posterior plus the fitted noise, as
            ``BayesianRidge.predict(return_std=True)``).
        t0: first epoch index (0-based) of the window used.
        k: number of epochs in the window.
        slope, intercept: posterior-mean line ``acc = intercept + slope * beta``
            (``intercept == raw_predicted``).
        bic: BIC_z of the window used (module docstring); NaN when its
            accuracies are constant.
        window_beta, window_acc: the k observations the line was fitted on.
        noise_precision: ``BayesianRidge.alpha_`` in accuracy units (1 / variance).
        weight_precision: ``BayesianRidge.lambda_``, the slope's prior
            precision, in the original units.
        bic_by_t0: ``(t0, BIC_z)`` for every window considered (one pair when
            ``t0`` was given), eligible or not.
        eligible_t0: the windows (by t0) that were eligible.
        flags: codes of :data:`FLAGS` that apply, in the order of :data:`FLAGS`.
        best_seen: the best validation accuracy among the epochs given.
        n_val, num_classes: as passed (None when not given).
        model: the fitted ``BayesianRidge``, on the scaled window
            (``x / x_scale``, ``y / y_scale``).
        x_scale, y_scale: the window's scales (module docstring).
    """

    predicted: float
    raw_predicted: float
    std: float
    t0: int
    k: int
    slope: float
    intercept: float
    bic: float
    window_beta: np.ndarray
    window_acc: np.ndarray
    noise_precision: float
    weight_precision: float
    bic_by_t0: tuple[tuple[int, float], ...]
    eligible_t0: tuple[int, ...]
    flags: tuple[str, ...]
    best_seen: float
    n_val: int | None
    num_classes: int | None
    model: BayesianRidge = field(repr=False)
    x_scale: float = 1.0
    y_scale: float = 1.0

    def __float__(self) -> float:
        return float(self.predicted)

    @property
    def flag_texts(self) -> list[str]:
        """The human-readable text of each flag (:data:`FLAGS`)."""
        return [FLAGS[f] for f in self.flags]

    def line(self, beta_values: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Mean and predictive std of the fitted line at ``beta_values`` (unclipped)."""
        x = np.asarray(beta_values, dtype=np.float64)
        shape = x.shape
        mean, std = self.model.predict(x.reshape(-1, 1) / self.x_scale, return_std=True)
        return (mean * self.y_scale).reshape(shape), (std * self.y_scale).reshape(shape)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (plain floats, ints and lists; NaN becomes None)."""
        return {
            "predicted": float(self.predicted),
            "raw_predicted": float(self.raw_predicted),
            "std": float(self.std),
            "t0": int(self.t0),
            "k": int(self.k),
            "slope": float(self.slope),
            "intercept": float(self.intercept),
            "bic": _json_num(self.bic),
            "window_beta": [float(v) for v in self.window_beta],
            "window_acc": [float(v) for v in self.window_acc],
            "noise_precision": float(self.noise_precision),
            "weight_precision": float(self.weight_precision),
            "bic_by_t0": [[int(t), _json_num(b)] for t, b in self.bic_by_t0],
            "eligible_t0": [int(t) for t in self.eligible_t0],
            "flags": list(self.flags),
            "best_seen": float(self.best_seen),
            "n_val": self.n_val,
            "num_classes": self.num_classes,
        }


def _json_num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def window_bic(
    model: BayesianRidge,
    x: np.ndarray,
    y: np.ndarray,
    *,
    x_scale: float = 1.0,
    y_scale: float = 1.0,
) -> float:
    """BIC_z of a 1-D ``BayesianRidge`` fit of a window: ``n ln(RSS / SS_y) + p ln n``.

    Args:
        model: a ``BayesianRidge`` fitted on ``x.reshape(-1, 1) / x_scale`` and
            ``y / y_scale``.
        x, y: the window's beta and accuracy values (1-D, same length n); the
            residuals are ``y - y_scale * model.predict(x / x_scale)``.
        x_scale, y_scale: the scales the window was divided by for the fit.

    Returns:
        The BIC_z; NaN when the accuracies are constant (SS_y = 0). RSS / SS_y
        is floored at :data:`RSS_RATIO_FLOOR` (an exact fit), so the value stays
        finite and exact fits tie.
    """
    n = y.shape[0]
    if np.ptp(y) == 0.0:  # (y - mean)**2 would leave rounding error, not 0
        return math.nan
    ss_y = float(np.sum((y - y.mean()) ** 2))
    resid = y - y_scale * model.predict(x.reshape(-1, 1) / x_scale)
    ratio = max(float(resid @ resid) / ss_y, RSS_RATIO_FLOOR)
    return n * math.log(ratio) + N_PARAMS * math.log(n)


def chance_threshold(n_val: int, num_classes: int) -> float:
    """Best accuracy at or below which a candidate counts as never having left chance level.

    ``1/C + CHANCE_SIGMAS * sqrt(p (1 - p) / n_val)`` with ``p = 1/C``: the chance
    accuracy plus :data:`CHANCE_SIGMAS` binomial standard deviations of an
    accuracy measured on ``n_val`` samples.
    """
    p = 1.0 / num_classes
    return p + CHANCE_SIGMAS * math.sqrt(p * (1.0 - p) / n_val)


def _scale(v: np.ndarray) -> float:
    """The window's standard deviation, or 1 when it is zero (a constant window)."""
    sd = float(np.std(v))
    return sd if sd > 0.0 else 1.0


def _check_int(value: Any, name: str, lo: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    return int(value)


def _fit(x: np.ndarray, y: np.ndarray) -> BayesianRidge:
    model = BayesianRidge()
    model.fit(x.reshape(-1, 1) / _scale(x), y / _scale(y))
    return model


def _eligible(y: np.ndarray, n_val: int | None) -> bool:
    """A window is eligible when its accuracies span at least one validation sample.

    Accuracies are counts over ``n_val``, so a span is 0 or at least ``1 / n_val``;
    the test is against half a sample, which float32 rounding (Keras' metrics)
    cannot cross.
    """
    span = float(np.ptp(y))
    if n_val is None:
        return span > 0.0
    return span >= 0.5 / n_val


def _choose(scores: list[tuple[int, float]], eligible: list[int]) -> int | None:
    """The eligible window with the smallest BIC_z, the later one on ties; None if none."""
    bics = {t: b for t, b in scores if t in eligible and math.isfinite(b)}
    if not bics:
        return None
    low = min(bics.values())
    return max(t for t, b in bics.items() if b <= low + BIC_TIE)


def _decreasing(x: np.ndarray) -> bool:
    """beta decreases over the window: its least-squares slope against the epoch is negative."""
    t = np.arange(x.shape[0], dtype=np.float64)
    return float(np.polyfit(t, x, 1)[0]) < 0.0


def predict_final(
    beta: ArrayLike | Sequence[float],
    val_acc: ArrayLike | Sequence[float],
    *,
    k: int = 5,
    t0: int | None = None,
    n_val: int | None = None,
    num_classes: int | None = None,
) -> Prediction:
    """Predict the final accuracy as h(0) of a Bayesian ridge line acc = h(beta).

    Args:
        beta: per-epoch training-set beta_eff, 1-D, one value per epoch.
        val_acc: per-epoch validation accuracy as a fraction in [0, 1], same
            length as ``beta``. The best of them is compared with the prediction
            (flag ``"below_best_seen"``): pass only the epochs observed.
        k: number of consecutive epochs the line is fitted on (>= 2).
        t0: 0-based index of the window's first epoch. ``None`` chooses it by
            BIC_z among all eligible windows ``0 <= t0 <= len(beta) - k``.
        n_val: number of validation samples the accuracies were measured on.
            It sets the eligibility rule (a span of at least ``1 / n_val``); when
            None only a window of constant accuracy is ineligible.
        num_classes: number of classes; with ``n_val`` it gives the chance-level
            flag ``"at_chance"`` (not evaluated when either is None).

    Returns:
        A :class:`Prediction`; ``float(prediction)`` is the predicted accuracy
        and ``prediction.flags`` says what about it is implausible.

    Raises:
        TypeError: ``k``, ``t0``, ``n_val`` or ``num_classes`` not an int;
            non-numeric curves.
        ValueError: curves not 1-D, of different lengths, containing NaN/Inf,
            shorter than ``k`` (pass a smaller ``k``: no window is shrunk
            silently), ``val_acc`` outside [0, 1], ``k < 2``, ``t0`` outside
            ``0 .. len(beta) - k``, ``n_val < 1`` or ``num_classes < 2``.
    """
    x_all = _as_curve(beta, "beta")
    y_all = _as_curve(val_acc, "val_acc")
    if x_all.shape != y_all.shape:
        raise ValueError(
            f"beta and val_acc must have the same length (one value per epoch), "
            f"got {x_all.shape[0]} and {y_all.shape[0]}"
        )
    if y_all.min() < 0.0 or y_all.max() > 1.0:
        raise ValueError(
            f"val_acc must be accuracies as fractions in [0, 1], got values from "
            f"{y_all.min():g} to {y_all.max():g} (percentages? divide by 100)"
        )
    k = _check_int(k, "k")
    if k < 2:
        raise ValueError(f"k must be >= 2 (a line needs two epochs), got {k}")
    if n_val is not None:
        n_val = _check_int(n_val, "n_val", 1)
    if num_classes is not None:
        num_classes = _check_int(num_classes, "num_classes", 2)
    n_epochs = x_all.shape[0]
    if n_epochs < k:
        raise ValueError(
            f"beta and val_acc are too short: {n_epochs} epochs observed but k={k}; "
            f"observe more epochs or pass k <= {n_epochs}"
        )
    if t0 is None:
        starts = range(n_epochs - k + 1)
    else:
        t0 = _check_int(t0, "t0")
        if not 0 <= t0 <= n_epochs - k:
            raise ValueError(
                f"t0 must be in 0..{n_epochs - k} (window of k={k} inside {n_epochs} "
                f"epochs), got {t0}"
            )
        starts = range(t0, t0 + 1)

    fits: dict[int, BayesianRidge] = {}
    scores: list[tuple[int, float]] = []
    eligible: list[int] = []
    for start in starts:
        x, y = x_all[start : start + k], y_all[start : start + k]
        fits[start] = _fit(x, y)
        bic = window_bic(fits[start], x, y, x_scale=_scale(x), y_scale=_scale(y))
        scores.append((start, bic))
        if _eligible(y, n_val):
            eligible.append(start)

    flags: set[str] = set()
    chosen = _choose(scores, eligible)
    if chosen is None:
        chosen = starts[-1]
        flags.add("no_eligible_window" if t0 is None else "window_not_eligible")
    model = fits[chosen]
    bic = dict(scores)[chosen]
    x, y = x_all[chosen : chosen + k].copy(), y_all[chosen : chosen + k].copy()
    if np.ptp(x) == 0.0:
        warnings.warn(
            f"beta is constant over the chosen window (epochs {chosen}..{chosen + k - 1}); "
            "the slope is undetermined and the prediction is the window's mean accuracy",
            RuntimeWarning,
            stacklevel=2,
        )
    sx, sy = _scale(x), _scale(y)
    mean, std = model.predict(np.zeros((1, 1)), return_std=True)
    raw = float(mean[0]) * sy
    predicted = min(1.0, max(0.0, raw))
    best = float(y_all.max())
    if predicted != raw:
        flags.add("clipped")
    if predicted < best:
        flags.add("below_best_seen")
    if (
        n_val is not None
        and num_classes is not None
        and best <= chance_threshold(n_val, num_classes)
    ):
        flags.add("at_chance")
    if not _decreasing(x):
        flags.add("beta_not_decreasing")
    x.setflags(write=False)
    y.setflags(write=False)
    return Prediction(
        predicted=predicted,
        raw_predicted=raw,
        std=float(std[0]) * sy,
        t0=chosen,
        k=k,
        slope=float(model.coef_[0]) * sy / sx,
        intercept=float(model.intercept_) * sy,
        bic=float(bic),
        window_beta=x,
        window_acc=y,
        noise_precision=float(model.alpha_) / sy**2,
        weight_precision=float(model.lambda_) * (sx / sy) ** 2,
        bic_by_t0=tuple(scores),
        eligible_t0=tuple(eligible),
        flags=tuple(f for f in FLAGS if f in flags),
        best_seen=best,
        n_val=n_val,
        num_classes=num_classes,
        model=model,
        x_scale=sx,
        y_scale=sy,
    )
