"""How well a method's scores rank the candidates against their true accuracy.

All functions take one score and one true value per candidate. Candidates
whose score or truth is NaN/Inf (e.g. a candidate whose run failed) are left
out of the comparison; fewer than two remaining candidates is an error for
the correlations (one for the regret). A correlation of constant input is
undefined and returned as NaN, without a warning.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["kendall", "pearson", "ranking_metrics", "spearman", "top1_regret"]


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
