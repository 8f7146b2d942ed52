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
#: ncap on the per-epoch beta of the paper's protocol, beside ncap's own with ``beta="both"``.
EPOCH_METHOD = "ncap_epoch"
METHOD_LABELS = {
    "ncap": "ncap (beta_eff)",
    EPOCH_METHOD: "ncap (epoch beta)",
    "last_seen": "last seen",
    "best_seen": "best seen",
    "curve_extrapolation": "curve extrap.",
    "logme": "LogME",
}
#: Methods whose score is itself a predicted accuracy (judged by MAE and bias too).
ACCURACY_METHODS = ("ncap", EPOCH_METHOD, "last_seen", "best_seen", "curve_extrapolation")
#: Methods that give a :class:`~ncap.selection.predict.Prediction` (flags, std).
PREDICTORS = ("ncap", EPOCH_METHOD)
#: The per-epoch beta protocols (SPEC section 6), as ``--beta`` takes them.
BETA_PROTOCOLS = ("step", "epoch", "both")


def methods_for(beta: str) -> tuple[str, ...]:
    """The methods of a run with beta protocol ``beta``: both ncap predictors for "both"."""
    if beta not in BETA_PROTOCOLS:
        raise ValueError(f"beta must be one of {list(BETA_PROTOCOLS)}, got {beta!r}")
    return ("ncap", EPOCH_METHOD, *METHODS[1:]) if beta == "both" else METHODS


@dataclass
class Scores:
    """One candidate's score under every method (NaN where a method failed)."""

    values: dict[str, float]
    errors: dict[str, str] = field(default_factory=dict)
    prediction: Any = None  # ncap's predict.Prediction, for plots
    predictions: dict[str, Any] = field(default_factory=dict)  # per method of PREDICTORS
    curve_fit: Any = None  # ncap.baselines.CurveFit, for plots
    warnings: list[str] = field(default_factory=list)


def _curve(values: list[float | None] | None, n: int) -> np.ndarray:
    a = np.array([np.nan if v is None else v for v in (values or [])[:n]], dtype=np.float64)
    return a


def score_record(
    record: CandidateRecord,
    *,
    epochs: int,
    k: int,
    t0: int | None,
    final_epoch: int,
    n_val: int | None = None,
    num_classes: int | None = None,
    methods: tuple[str, ...] = METHODS,
) -> Scores:
    """Each method's score for one candidate record (ncap: its predicted final accuracy).

    ``n_val`` and ``num_classes`` go to :func:`ncap.predict_final` (window
    eligibility and the chance-level flag); ``methods`` is :data:`METHODS` or
    :func:`methods_for`'s tuple (``"ncap_epoch"`` reads ``record.beta_epoch``).
    """
    from . import baselines
    from .predict import predict_final

    values = dict.fromkeys(methods, math.nan)
    errors: dict[str, str] = {}
    out = Scores(values, errors)
    if not record.ok:
        return out
    curves = {"ncap": record.beta, EPOCH_METHOD: record.beta_epoch}
    acc = _curve(record.val_accuracy, epochs)
    if len(acc) < epochs:
        msg = f"only {len(acc)} epochs were recorded, {epochs} are observed"
        for m in methods:
            if m != "logme":
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

    for method in (m for m in PREDICTORS if m in methods):
        beta = _curve(curves[method], epochs)
        if len(beta) < epochs and method not in errors:
            errors[method] = f"only {len(beta)} beta values were recorded, {epochs} are observed"
        pred = attempt(
            method,
            lambda beta=beta: predict_final(
                beta, acc, k=k, t0=t0, n_val=n_val, num_classes=num_classes
            ),
        )
        if pred is not None:
            values[method] = float(pred.predicted)
            out.predictions[method] = pred
    out.prediction = out.predictions.get("ncap")
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
