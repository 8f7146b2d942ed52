"""LogME: the log of the maximum marginal evidence of a linear model on features.

You, Liu, Wang and Long, "LogME: Practical Assessment of Pre-trained Models
for Transfer Learning", ICML 2021. Written here from the published algorithm:

For features ``F`` (N x D) and each class ``c`` present in the labels, the
target is the one-hot column ``y = (labels == c)``. A Bayesian linear model
``y = F w + noise`` with prior ``w ~ N(0, alpha^-1 I)`` and noise precision
``beta`` has the evidence (marginal likelihood)::

    log p(y | F, alpha, beta) = N/2 log beta + D/2 log alpha - N/2 log(2 pi)
                                - beta/2 ||F m - y||^2 - alpha/2 m.m - 1/2 log|A|
    A = alpha I + beta F^T F,   m = beta A^-1 F^T y

``alpha`` and ``beta`` are set to maximise it by MacKay's fixed-point
iteration (with the SVD ``F = U diag(s) V^T`` and ``sigma_i = s_i^2``)::

    gamma = sum_i beta sigma_i / (alpha + beta sigma_i)
    alpha <- gamma / m.m,     beta <- (N - gamma) / ||F m - y||^2

LogME is the maximum evidence divided by N, averaged over the classes.

Differences from the authors' code (thuml/LogME), on purpose: the
iteration runs to a tight tolerance (they stop after at most 11 steps or at
a 1e-3 relative change of alpha/beta), no 1e-5 is added to the
denominators, ``log|A|`` includes the ``(D - rank) log alpha`` of the zero
singular values when D > N, and only classes present in ``labels`` are used
(their code loops over ``range(max(labels) + 1)``). When the evidence has no
interior maximum the iteration drifts (often slowly) to an edge of the
(alpha, beta) domain; the supremum there is evaluated in closed form
(see :func:`max_evidence`) instead of stopping at an arbitrary step.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["logme", "max_evidence"]

_TINY = np.finfo(np.float64).tiny
# alpha/beta this far below the smallest (above the largest) sigma_i: the
# regularisation no longer matters and the evidence is at its boundary limit.
_BOUNDARY = 1e-13


def _as_features(features: Any) -> np.ndarray:
    try:
        f = np.asarray(features, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"features must be a numeric (N, D) array ({exc})") from None
    if f.ndim != 2:
        raise ValueError(f"features must be 2-D (N samples, D features), got shape {f.shape}")
    if f.shape[0] < 2 or f.shape[1] < 1:
        raise ValueError(f"features needs at least 2 samples and 1 feature, got shape {f.shape}")
    if not np.isfinite(f).all():
        raise ValueError("features contains NaN or Inf")
    return f


def _as_labels(labels: Any, n: int) -> np.ndarray:
    lab = np.asarray(labels)
    if lab.ndim != 1:
        raise ValueError(f"labels must be 1-D (one class index per sample), got shape {lab.shape}")
    if lab.shape[0] != n:
        raise ValueError(
            f"labels and features must have the same number of samples, "
            f"got {lab.shape[0]} labels and {n} feature rows"
        )
    if lab.dtype.kind in "iub":
        return lab.astype(np.int64)
    if lab.dtype.kind == "f":
        if not np.isfinite(lab).all():
            raise ValueError("labels contains NaN or Inf")
        if np.any(lab != np.round(lab)):
            raise TypeError("labels must be integer class indices, got non-integer floats")
        return lab.astype(np.int64)
    raise TypeError(f"labels must be integer class indices, got dtype {lab.dtype}")


class _Spectrum:
    """The SVD of F reduced to what the evidence needs (rank r, sigma = s^2, U)."""

    def __init__(self, f: np.ndarray) -> None:
        n, d = f.shape
        self.n, self.d = n, d
        if n > d:
            # Eigen-decomposition of the D x D Gram matrix: cheaper than an SVD of F.
            evals, v = np.linalg.eigh(f.T @ f)
            order = np.argsort(evals)[::-1]
            evals, v = np.clip(evals[order], 0.0, None), v[:, order]
            keep = evals > evals[0] * max(n, d) * np.finfo(np.float64).eps * 10
            self.sigma = evals[keep]
            self.u = (f @ v[:, keep]) / np.sqrt(self.sigma)
        else:
            u, s, _ = np.linalg.svd(f, full_matrices=False)
            keep = s > s[0] * max(n, d) * np.finfo(np.float64).eps
            self.sigma = s[keep] ** 2
            self.u = u[:, keep]
        if self.sigma.size == 0:
            raise ValueError("features has rank 0 (all zeros): LogME is undefined")
        self.rank = int(self.sigma.size)


def _terms(sp: _Spectrum, x2: float | np.ndarray, res0: float, alpha: float, beta: float):
    """gamma, m.m and ||F m - y||^2 at (alpha, beta) from x2 = (U^T y)^2."""
    denom = alpha + beta * sp.sigma
    gamma = float(np.sum(beta * sp.sigma / denom))
    m2 = float(np.sum(beta**2 * sp.sigma * x2 / denom**2))
    rss = float(np.sum((alpha / denom) ** 2 * x2)) + res0
    return gamma, m2, rss


def _evidence(sp: _Spectrum, x2: np.ndarray, res0: float, alpha: float, beta: float) -> float:
    """log p(y | F, alpha, beta) (total, not per sample)."""
    _, m2, rss = _terms(sp, x2, res0, alpha, beta)
    logdet = float(np.sum(np.log(alpha + beta * sp.sigma))) + (sp.d - sp.rank) * math.log(alpha)
    return (
        0.5 * sp.n * math.log(beta)
        + 0.5 * sp.d * math.log(alpha)
        - 0.5 * sp.n * math.log(2.0 * math.pi)
        - 0.5 * beta * rss
        - 0.5 * alpha * m2
        - 0.5 * logdet
    )


def _boundary_limits(sp: _Spectrum, y: np.ndarray, x2: np.ndarray, res0: float):
    """Suprema of the evidence on the edges of the (alpha, beta) domain.

    alpha -> inf (w = 0, y pure noise), maximised over beta; and, when y lies
    in the column space of F (rank == N), beta -> inf (y interpolated
    exactly, y ~ N(0, F F^T / alpha)), maximised over alpha. Totals, not per
    sample, as ``(evidence, alpha, beta)``.
    """
    n = sp.n
    beta = n / float(y @ y)
    out = [(0.5 * n * math.log(beta / (2.0 * math.pi)) - 0.5 * n, math.inf, beta)]
    q = float(np.sum(x2 / sp.sigma))
    if res0 == 0.0 and q > 0.0:
        alpha = n / q
        ev = (
            -0.5 * n * math.log(2.0 * math.pi)
            - 0.5 * float(np.sum(np.log(sp.sigma / alpha)))
            - 0.5 * n
        )
        out.append((ev, alpha, math.inf))
    return out


def _max_evidence(
    sp: _Spectrum, y: np.ndarray, *, tol: float, max_iter: int
) -> tuple[float, float, float]:
    x = sp.u.T @ y
    x2 = x**2
    # Part of y outside the column space of F: no alpha/beta can fit it. When F
    # has full row rank (rank == N) there is none, whatever rounding says.
    res0 = 0.0 if sp.rank == sp.n else max(float(y @ y) - float(x @ x), 0.0)
    alpha, beta = 1.0, 1.0
    converged = False
    for _ in range(max_iter):
        gamma, m2, rss = _terms(sp, x2, res0, alpha, beta)
        new_alpha = gamma / max(m2, _TINY)
        new_beta = (sp.n - gamma) / max(rss, _TINY)
        converged = abs(math.log(new_alpha / alpha)) < tol and abs(math.log(new_beta / beta)) < tol
        alpha, beta = new_alpha, new_beta
        ratio = alpha / beta
        # Regularisation negligible against every sigma_i (or swamping all of
        # them): the iterate is heading for an edge of the domain, whose
        # supremum _boundary_limits gives in closed form.
        if converged or ratio < _BOUNDARY * sp.sigma[-1] or ratio * _BOUNDARY > sp.sigma[0]:
            break
    best = (_evidence(sp, x2, res0, alpha, beta), alpha, beta)
    edges = _boundary_limits(sp, y, x2, res0)
    top = max([best, *edges], key=lambda c: c[0])
    if not converged:
        # A sublinear crawl towards an edge: the edge's closed form is the
        # supremum; the iterate's evidence can exceed it only by rounding.
        edge = max(edges, key=lambda c: c[0])
        if edge[0] >= best[0] - 1e-9 * max(1.0, abs(best[0])):
            top = edge
    if top is best and not converged:
        warnings.warn(
            f"LogME's fixed-point iteration did not converge in {max_iter} steps",
            RuntimeWarning,
            stacklevel=3,
        )
    return top[0] / sp.n, top[1], top[2]


def max_evidence(
    features: ArrayLike, y: ArrayLike, *, tol: float = 1e-10, max_iter: int = 2_000
) -> tuple[float, float, float]:
    """Maximum evidence per sample of ``y ~ features @ w`` and the maximising alpha, beta.

    Args:
        features: (N, D) feature matrix.
        y: (N,) real target (a one-hot column for LogME).
        tol: convergence tolerance on log(alpha) and log(beta) between steps.
        max_iter: iteration cap (a RuntimeWarning is raised if it is reached).

    Returns:
        ``(log p(y | F, alpha, beta) / N, alpha, beta)`` at the fixed point.
        When the supremum lies on an edge of the domain (``alpha -> inf``: no
        linear fit beats w = 0; ``beta -> inf``: N <= rank and y is
        interpolated exactly) the limit is returned in closed form, with
        ``math.inf`` for that parameter.
    """
    f = _as_features(features)
    t = np.asarray(y, dtype=np.float64)
    if t.shape != (f.shape[0],):
        raise ValueError(f"y must have shape ({f.shape[0]},) to match features, got {t.shape}")
    if not np.isfinite(t).all():
        raise ValueError("y contains NaN or Inf")
    if not np.any(t):
        raise ValueError("y is all zeros: the evidence is unbounded (beta -> inf)")
    return _max_evidence(_Spectrum(f), t, tol=tol, max_iter=max_iter)


def logme(features: ArrayLike, labels: ArrayLike) -> float:
    """LogME score of ``features`` for the classification ``labels`` (higher is better).

    Args:
        features: (N, D) features of the N target samples from a backbone.
        labels: (N,) integer class labels; at least two distinct classes.

    Returns:
        The mean over the classes present of the maximum log evidence per sample.

    Raises:
        TypeError: non-numeric features or non-integer labels.
        ValueError: wrong shapes, mismatched N, NaN/Inf, a single class,
            all-zero features.
    """
    f = _as_features(features)
    lab = _as_labels(labels, f.shape[0])
    classes = np.unique(lab)
    if classes.size < 2:
        raise ValueError(
            f"labels has only one class ({classes.tolist()}); LogME needs at least two"
        )
    sp = _Spectrum(f)
    scores = [
        _max_evidence(sp, (lab == c).astype(np.float64), tol=1e-10, max_iter=2_000)[0]
        for c in classes
    ]
    return float(np.mean(scores))
