"""Predict a candidate's final accuracy from its first epochs (SPEC section 6).

The paper (section 4.4, Appendix E) fits the validation accuracy as a linear
function of the training-set beta_eff, ``acc = h(beta)``, by Bayesian ridge
regression on ``k`` consecutive epochs, and reads the final accuracy off at
``beta = 0`` (beta_eff vanishes when training has converged).

Epochs are indexed from 0: ``beta[i]`` and ``val_acc[i]`` are the values
measured after the (i+1)-th epoch of fine-tuning, and the window starting at
``t0`` covers the entries ``t0 .. t0 + k - 1``.

BIC used to choose ``t0`` (all windows have ``n = k`` points)::

    r_i   = y_i - (intercept + slope * x_i)       # posterior-mean line
    logL  = n/2 * log(alpha / (2 pi)) - alpha/2 * sum(r_i^2)
    BIC   = -2 logL + p * log(n),   p = 3 (slope, intercept, noise)

where ``alpha`` is the noise precision the Bayesian ridge fit estimated
(``BayesianRidge.alpha_``, converted to the accuracies' units). The window
with the smallest BIC wins; ties go to the earliest ``t0``. Since every window
has the same n and p, this picks the window the line fits most tightly.

Fewer than ``k`` observed epochs is an error (the caller chooses a smaller
``k``); no window is shrunk silently.

Units: beta_eff carries the loss's scale (SPEC section 1: beta(cP) = c beta(P))
and scikit-learn's ``BayesianRidge`` is not equivariant to the units of its
data (its Gamma hyperpriors and start values are absolute). So each window is
fitted on ``x / sx`` and ``y / sy`` with ``sx``, ``sy`` the window's standard
deviations (1 when zero), and everything is reported back in the original
units: the prediction is unchanged when beta or the accuracies are rescaled.
The BIC is computed in the original units so windows compare fairly.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from sklearn.linear_model import BayesianRidge

from .baselines import _as_curve

__all__ = ["Prediction", "predict_final", "window_bic"]

# Number of free parameters in the BIC: slope, intercept and the noise precision.
_N_PARAMS = 3


@dataclass(frozen=True, eq=False)
class Prediction:
    """The Bayesian-ridge prediction of one candidate's final accuracy.

    Attributes:
        predicted: h(0), the predicted final accuracy.
        std: predictive standard deviation at beta = 0 (posterior of the line
            plus the fitted noise, as ``BayesianRidge.predict(return_std=True)``).
        t0: first epoch index (0-based) of the window used.
        k: number of epochs in the window.
        slope, intercept: posterior-mean line ``acc = intercept + slope * beta``
            (``intercept == predicted``).
        bic: BIC of the chosen window (module docstring).
        window_beta, window_acc: the k observations the line was fitted on.
        noise_precision: ``BayesianRidge.alpha_`` in accuracy units (1 / variance).
        weight_precision: ``BayesianRidge.lambda_``, the slope's prior
            precision, in the original units.
        bic_by_t0: ``(t0, bic)`` for every window considered (one pair when
            ``t0`` was given).
        model: the fitted ``BayesianRidge``, on the scaled window
            (``x / x_scale``, ``y / y_scale``).
        x_scale, y_scale: the window's scales (module docstring).
    """

    predicted: float
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
    model: BayesianRidge = field(repr=False)
    x_scale: float = 1.0
    y_scale: float = 1.0

    def __float__(self) -> float:
        return float(self.predicted)

    def line(self, beta_values: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Mean and predictive std of the fitted line at ``beta_values`` (for plots)."""
        x = np.asarray(beta_values, dtype=np.float64)
        shape = x.shape
        mean, std = self.model.predict(x.reshape(-1, 1) / self.x_scale, return_std=True)
        return (mean * self.y_scale).reshape(shape), (std * self.y_scale).reshape(shape)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (plain floats, ints and lists)."""
        return {
            "predicted": float(self.predicted),
            "std": float(self.std),
            "t0": int(self.t0),
            "k": int(self.k),
            "slope": float(self.slope),
            "intercept": float(self.intercept),
            "bic": float(self.bic),
            "window_beta": [float(v) for v in self.window_beta],
            "window_acc": [float(v) for v in self.window_acc],
            "noise_precision": float(self.noise_precision),
            "weight_precision": float(self.weight_precision),
            "bic_by_t0": [[int(t), float(b)] for t, b in self.bic_by_t0],
        }


def window_bic(
    model: BayesianRidge,
    x: np.ndarray,
    y: np.ndarray,
    *,
    x_scale: float = 1.0,
    y_scale: float = 1.0,
) -> float:
    """BIC of a 1-D ``BayesianRidge`` fit of a window, in the original units.

    Args:
        model: a ``BayesianRidge`` fitted on ``x.reshape(-1, 1) / x_scale``
            and ``y / y_scale``.
        x, y: the window's beta and accuracy values in original units
            (1-D, same length n); the residuals are ``y - h(x)``.
        x_scale, y_scale: the scales the window was divided by; the noise
            precision in original units is ``model.alpha_ / y_scale**2``.
    """
    n = y.shape[0]
    resid = y - y_scale * model.predict(x.reshape(-1, 1) / x_scale)
    alpha = float(model.alpha_) / y_scale**2
    loglik = 0.5 * n * math.log(alpha / (2.0 * math.pi)) - 0.5 * alpha * float(resid @ resid)
    return -2.0 * loglik + _N_PARAMS * math.log(n)


def _scale(v: np.ndarray) -> float:
    """The window's standard deviation, or 1 when it is zero (a constant window)."""
    sd = float(np.std(v))
    return sd if sd > 0.0 else 1.0


def _check_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return int(value)


def _fit(x: np.ndarray, y: np.ndarray) -> BayesianRidge:
    model = BayesianRidge()
    model.fit(x.reshape(-1, 1) / _scale(x), y / _scale(y))
    return model


def predict_final(
    beta: ArrayLike | Sequence[float],
    val_acc: ArrayLike | Sequence[float],
    *,
    k: int = 5,
    t0: int | None = None,
) -> Prediction:
    """Predict the final accuracy as h(0) of a Bayesian ridge line acc = h(beta).

    Args:
        beta: per-epoch training-set beta_eff, 1-D, one value per epoch.
        val_acc: per-epoch validation accuracy, same length as ``beta``.
        k: number of consecutive epochs the line is fitted on (>= 2).
        t0: 0-based index of the window's first epoch. ``None`` chooses it by
            BIC among all windows ``0 <= t0 <= len(beta) - k``.

    Returns:
        A :class:`Prediction`; ``float(prediction)`` is the predicted accuracy.

    Raises:
        TypeError: ``k`` or ``t0`` not an int; non-numeric curves.
        ValueError: curves not 1-D, of different lengths, containing NaN/Inf,
            shorter than ``k`` (pass a smaller ``k``: no window is shrunk
            silently), ``k < 2``, or ``t0`` outside ``0 .. len(beta) - k``.
    """
    x_all = _as_curve(beta, "beta")
    y_all = _as_curve(val_acc, "val_acc")
    if x_all.shape != y_all.shape:
        raise ValueError(
            f"beta and val_acc must have the same length (one value per epoch), "
            f"got {x_all.shape[0]} and {y_all.shape[0]}"
        )
    k = _check_int(k, "k")
    if k < 2:
        raise ValueError(f"k must be >= 2 (a line needs two epochs), got {k}")
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

    best: tuple[float, int, BayesianRidge] | None = None
    scores: list[tuple[int, float]] = []
    for start in starts:
        x, y = x_all[start : start + k], y_all[start : start + k]
        model = _fit(x, y)
        bic = window_bic(model, x, y, x_scale=_scale(x), y_scale=_scale(y))
        scores.append((start, bic))
        # Strict '<' keeps the earliest window on ties.
        if best is None or bic < best[0]:
            best = (bic, start, model)
    assert best is not None
    bic, start, model = best
    x, y = x_all[start : start + k].copy(), y_all[start : start + k].copy()
    if np.ptp(x) == 0.0:
        warnings.warn(
            f"beta is constant over the chosen window (epochs {start}..{start + k - 1}); "
            "the slope is undetermined and the prediction is the window's mean accuracy",
            RuntimeWarning,
            stacklevel=2,
        )
    sx, sy = _scale(x), _scale(y)
    mean, std = model.predict(np.zeros((1, 1)), return_std=True)
    x.setflags(write=False)
    y.setflags(write=False)
    return Prediction(
        predicted=float(mean[0]) * sy,
        std=float(std[0]) * sy,
        t0=start,
        k=k,
        slope=float(model.coef_[0]) * sy / sx,
        intercept=float(model.intercept_) * sy,
        bic=float(bic),
        window_beta=x,
        window_acc=y,
        noise_precision=float(model.alpha_) / sy**2,
        weight_precision=float(model.lambda_) * (sx / sy) ** 2,
        bic_by_t0=tuple(scores),
        model=model,
        x_scale=sx,
        y_scale=sy,
    )
