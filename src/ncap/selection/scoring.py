"""Score one fine-tuned candidate: ncap's prediction and the baselines, from its record.

Runs in the calling process on the stored curves (so a resumed run can use
another ``k`` or ``final_epoch`` without training again). Every method reads
only the first ``epochs`` epochs; LogME was computed before fine-tuning.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .record import CandidateRecord

#: Methods in report order: ncap first, then the baselines.
METHODS = ("ncap", "last_seen", "best_seen", "curve_extrapolation", "logme")
METHOD_LABELS = {
    "ncap": "ncap (beta_eff)",
    "last_seen": "last seen",
    "best_seen": "best seen",
    "curve_extrapolation": "curve extrap.",
    "logme": "LogME",
}


@dataclass
class Scores:
    """One candidate's score under every method (NaN where a method failed)."""

    values: dict[str, float]
    errors: dict[str, str] = field(default_factory=dict)
    prediction: Any = None  # ncap.predict.Prediction, for plots
    curve_fit: Any = None  # ncap.baselines.CurveFit, for plots
    warnings: list[str] = field(default_factory=list)


def _curve(values: list[float | None] | None, n: int) -> np.ndarray:
    a = np.array([np.nan if v is None else v for v in (values or [])[:n]], dtype=np.float64)
    return a


def score_record(
    record: CandidateRecord, *, epochs: int, k: int, t0: int | None, final_epoch: int
) -> Scores:
    """ncap's predicted final accuracy and each baseline's score for one candidate record."""
    from . import baselines
    from .predict import predict_final

    values = dict.fromkeys(METHODS, math.nan)
    errors: dict[str, str] = {}
    out = Scores(values, errors)
    if not record.ok:
        return out
    beta = _curve(record.beta, epochs)
    acc = _curve(record.val_accuracy, epochs)
    if len(acc) < epochs:
        msg = f"only {len(acc)} epochs were recorded, {epochs} are observed"
        for m in METHODS[:4]:
            errors[m] = msg

    def attempt(method: str, fn: Any) -> Any:
        if method in errors:
            return None
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                res = fn()
            out.warnings.extend(f"{method}: {w.message}" for w in caught)
            return res
        except (ValueError, TypeError, ArithmeticError, np.linalg.LinAlgError) as err:
            errors[method] = f"{type(err).__name__}: {err}"
            return None

    pred = attempt("ncap", lambda: predict_final(beta, acc, k=k, t0=t0))
    if pred is not None:
        values["ncap"] = float(pred.predicted)
        out.prediction = pred
    for name, fn in (("last_seen", baselines.last_seen), ("best_seen", baselines.best_seen)):
        v = attempt(name, lambda fn=fn: fn(acc))
        if v is not None:
            values[name] = float(v)
    fit = attempt("curve_extrapolation", lambda: baselines.curve_extrapolation(acc, final_epoch))
    if fit is not None:
        values["curve_extrapolation"] = float(fit.value)
        out.curve_fit = fit
    if record.logme is not None:
        values["logme"] = float(record.logme)
    else:
        errors["logme"] = record.logme_error or "LogME was not computed"
    return out
