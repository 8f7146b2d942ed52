"""How well a method's scores rank the candidates against their true accuracy.

All functions take one score and one true value per candidate. Candidates
whose score or truth is NaN/Inf (e.g. a candidate whose run failed) are left
out of the comparison; fewer than two remaining candidates is an error for
the correlations (one for the regret and the accuracy metrics). A correlation
of constant input is undefined and returned as NaN, without a warning.

Ranking metrics judge the order; :func:`accuracy_metrics` judges a method whose
score is itself a predicted accuracy (its error and, given a predictive std,
its coverage); :func:`seed_ceiling` says how well one seed's truths rank
another's, a ceiling no predictor can be trusted beyond.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "accuracy_metrics",
    "kendall",
    "pearson",
    "ranking_metrics",
    "seed_ceiling",
    "spearman",
    "top1_regret",
]


def _pairs(
    pred: Any, truth: Any, *, need: int, pred_name: str = "pred"
) -> tuple[np.ndarray, np.ndarray]:
    try:
        p = np.asarray(pred, dtype=np.float64)
        t = np.asarray(truth, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{pred_name} and truth must be 1-D sequences of numbers ({exc})") from None
    if p.ndim != 1 or t.ndim != 1:
        raise ValueError(
            f"{pred_name} and truth must be 1-D (one value per candidate), "
            f"got shapes {p.shape} and {t.shape}"
        )
    if p.shape != t.shape:
        raise ValueError(
            f"{pred_name} and truth must have the same length, got {p.shape[0]} and {t.shape[0]}"
        )
    ok = np.isfinite(p) & np.isfinite(t)
    if int(ok.sum()) < need:
        raise ValueError(
            f"need at least {need} candidate(s) with finite {pred_name} and truth, "
            f"got {int(ok.sum())} of {p.shape[0]}"
        )
    return p[ok], t[ok]


def _corr(fn: Callable[..., Any], pred: ArrayLike, truth: ArrayLike) -> float:
    p, t = _pairs(pred, truth, need=2)
    if np.ptp(p) == 0.0 or np.ptp(t) == 0.0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(p, t)[0])


def spearman(pred: ArrayLike | Sequence[float], truth: ArrayLike | Sequence[float]) -> float:
    """Spearman's rank correlation rho (``scipy.stats.spearmanr``)."""
    from scipy.stats import spearmanr

    return _corr(spearmanr, pred, truth)


def kendall(pred: ArrayLike | Sequence[float], truth: ArrayLike | Sequence[float]) -> float:
    """Kendall's tau-b (``scipy.stats.kendalltau``)."""
    from scipy.stats import kendalltau

    return _corr(kendalltau, pred, truth)


def pearson(pred: ArrayLike | Sequence[float], truth: ArrayLike | Sequence[float]) -> float:
    """Pearson's linear correlation r (``scipy.stats.pearsonr``)."""
    from scipy.stats import pearsonr

    return _corr(pearsonr, pred, truth)


def top1_regret(scores: ArrayLike | Sequence[float], truth: ArrayLike | Sequence[float]) -> float:
    """``truth.max() - truth[argmax(scores)]``: accuracy lost by picking the top-scored one.

    Ties in ``scores`` go to the first candidate (``numpy.argmax``). 0 means
    the method picked a best candidate.
    """
    s, t = _pairs(scores, truth, need=1, pred_name="scores")
    return float(t.max() - t[int(np.argmax(s))])


def ranking_metrics(
    scores: ArrayLike | Sequence[float], truth: ArrayLike | Sequence[float]
) -> dict[str, float]:
    """All ranking metrics: keys ``spearman``, ``kendall``, ``pearson``, ``top1_regret``."""
    return {
        "spearman": spearman(scores, truth),
        "kendall": kendall(scores, truth),
        "pearson": pearson(scores, truth),
        "top1_regret": top1_regret(scores, truth),
    }


def accuracy_metrics(
    predicted: ArrayLike | Sequence[float],
    truth: ArrayLike | Sequence[float],
    std: ArrayLike | Sequence[float] | None = None,
) -> dict[str, float]:
    """How far predicted accuracies lie from the truth.

    Returns ``mae`` (mean of ``|predicted - truth|``), ``bias`` (mean of
    ``predicted - truth``: positive means over-prediction) and ``n`` (the
    candidates compared). With ``std`` (one predictive standard deviation per
    candidate) also ``within_1std`` and ``within_2std``: the fraction of truths
    with ``|predicted - truth| <= 1 (2) * std``; a candidate with a non-finite
    std is left out of those (and of ``n_std``, their count).
    """
    p, t = _pairs(predicted, truth, need=1, pred_name="predicted")
    out = {"mae": float(np.mean(np.abs(p - t))), "bias": float(np.mean(p - t)), "n": float(len(p))}
    if std is None:
        return out
    sd = np.asarray(std, dtype=np.float64)
    full_p = np.asarray(predicted, dtype=np.float64)
    if sd.shape != full_p.shape:
        raise ValueError(
            f"std must have one value per candidate, got {sd.shape[0] if sd.ndim else 0} "
            f"for {full_p.shape[0]}"
        )
    full_t = np.asarray(truth, dtype=np.float64)
    ok = np.isfinite(full_p) & np.isfinite(full_t) & np.isfinite(sd) & (sd >= 0)
    err = np.abs(full_p[ok] - full_t[ok])
    n = int(ok.sum())
    out["n_std"] = float(n)
    out["within_1std"] = float(np.mean(err <= sd[ok])) if n else math.nan
    out["within_2std"] = float(np.mean(err <= 2.0 * sd[ok])) if n else math.nan
    return out


def seed_ceiling(truths_by_seed: ArrayLike | Sequence[Sequence[float]]) -> dict[str, Any]:
    """Spearman's rho between the truths of every pair of seeds (rows: seeds, columns: candidates).

    Returns ``pairs`` (``[i, j, rho]`` for seeds i < j, by row index) and
    ``spearman`` (their mean): how well one seed's true accuracies rank
    another's. Needs at least two seeds.
    """
    try:
        t = np.asarray(truths_by_seed, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"truths_by_seed must be a 2-D array of numbers ({exc})") from None
    if t.ndim != 2 or t.shape[0] < 2:
        raise ValueError(
            f"truths_by_seed must be 2-D with at least 2 seeds (rows), got shape {t.shape}"
        )
    pairs = [
        [i, j, spearman(t[i], t[j])] for i in range(t.shape[0]) for j in range(i + 1, t.shape[0])
    ]
    rhos = [r for *_, r in pairs if math.isfinite(r)]
    return {"pairs": pairs, "spearman": float(np.mean(rhos)) if rhos else math.nan}
