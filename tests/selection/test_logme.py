"""LogME against a direct NumPy evaluation of the evidence with full matrices."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from sklearn.datasets import load_digits

from ncap.selection.logme import logme, max_evidence


def evidence_dxd(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """log p(y | F, alpha, beta) from the D x D posterior (You et al. 2021, eq. 2-3)."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    r = f @ m - y
    sign, logdet = np.linalg.slogdet(a)
    assert sign > 0
    return (
        n / 2 * math.log(beta)
        + d / 2 * math.log(alpha)
        - n / 2 * math.log(2 * math.pi)
        - beta / 2 * float(r @ r)
        - alpha / 2 * float(m @ m)
        - logdet / 2
    )


def evidence_nxn(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """The same evidence as a Gaussian marginal: y ~ N(0, I / beta + F F^T / alpha)."""
    n = f.shape[0]
    c = np.eye(n) / beta + f @ f.T / alpha
    sign, logdet = np.linalg.slogdet(c)
    assert sign > 0
    return -0.5 * (n * math.log(2 * math.pi) + logdet + float(y @ np.linalg.solve(c, y)))


def _data(seed: int, n: int, d: int, n_classes: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    centers = rng.normal(0, 1.0, (n_classes, d))
    feats = centers[labels] + rng.normal(0, 1.5, (n, d))
    return feats, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("n,d", [(60, 8), (120, 20), (40, 40), (15, 30)])
def test_evidence_matches_direct_formula(seed: int, n: int, d: int) -> None:
    f, labels = _data(seed, n, d)
    y = (labels == labels[0]).astype(float)
    ev, alpha, beta = max_evidence(f, y)
    assert math.isfinite(ev)
    # An evidence maximum on the boundary (alpha or beta -> inf) is the limit;
    # approach it with a large finite value.
    a = alpha if math.isfinite(alpha) else 1e9
    b = beta if math.isfinite(beta) else 1e9
    assert ev * n == pytest.approx(evidence_dxd(f, y, a, b), rel=1e-7, abs=1e-7)
    assert ev * n == pytest.approx(evidence_nxn(f, y, a, b), rel=1e-7, abs=1e-7)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("n,d", [(60, 8), (120, 20)])
def test_converged_point_is_the_maximum(seed: int, n: int, d: int) -> None:
    f, labels = _data(seed, n, d)
    y = (labels == 1).astype(float)
    ev, alpha, beta = max_evidence(f, y)
    assert math.isfinite(alpha) and math.isfinite(beta)
    best = evidence_nxn(f, y, alpha, beta)
    for da in (-0.05, 0.0, 0.05):
        for db in (-0.05, 0.0, 0.05):
            if da == db == 0.0:
                continue
            other = evidence_nxn(f, y, alpha * math.exp(da), beta * math.exp(db))
            assert other < best
    # Stationary: the log-scale gradient vanishes (central differences).
    h = 1e-4
    up, down = math.exp(h), math.exp(-h)
    ga = evidence_nxn(f, y, alpha * up, beta) - evidence_nxn(f, y, alpha * down, beta)
    gb = evidence_nxn(f, y, alpha, beta * up) - evidence_nxn(f, y, alpha, beta * down)
    assert abs(ga / (2 * h)) < 1e-5 * n and abs(gb / (2 * h)) < 1e-5 * n


@pytest.mark.parametrize("seed", [0, 1])
def test_boundary_maximum_beats_every_finite_point(seed: int) -> None:
    # N < D: F F^T has full rank and the supremum may lie at alpha or beta -> inf.
    f, labels = _data(seed, 12, 40, n_classes=2)
    y = (labels == 0).astype(float)
    ev, _, _ = max_evidence(f, y)
    grid = np.exp(np.linspace(-6, 12, 19))
    finite = max(evidence_nxn(f, y, a, b) for a in grid for b in grid)
    assert ev * f.shape[0] >= finite - 1e-9


@pytest.mark.parametrize("n,d", [(30, 4), (10, 25)])
def test_features_orthogonal_to_target_give_the_noise_only_limit(n: int, d: int) -> None:
    # No linear fit of y is possible: the evidence is maximal at alpha -> inf (w = 0).
    rng = np.random.default_rng(0)
    y = (np.arange(n) < n // 3).astype(float)
    f = rng.normal(size=(n, d))
    f -= np.outer(y, y @ f) / (y @ y)
    ev, alpha, beta = max_evidence(f, y)
    assert alpha == math.inf
    assert beta == pytest.approx(n / (y @ y))
    want = 0.5 * math.log(beta / (2 * math.pi)) - 0.5
    assert ev == pytest.approx(want, rel=1e-12)
    assert ev * n == pytest.approx(evidence_nxn(f, y, 1e12, beta), rel=1e-8)


@pytest.mark.parametrize("seed", [0, 1])
def test_logme_is_mean_over_classes(seed: int) -> None:
    f, labels = _data(seed, 80, 10, n_classes=4)
    labels = np.array([3, 7, 11, 20])[labels]  # arbitrary class ids
    want = np.mean(
        [
            evidence_dxd(f, (labels == c).astype(float), *max_evidence(f, labels == c)[1:]) / 80
            for c in np.unique(labels)
        ]
    )
    assert logme(f, labels) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_informative_features_score_higher(seed: int) -> None:
    digits = load_digits()
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(digits.target), 600, replace=False)
    x, y = digits.data[idx] / 16.0, digits.target[idx]
    noise = rng.normal(0.0, x.std(), x.shape)
    shuffled = x[rng.permutation(len(x))]  # same features, labels no longer attached
    with warnings.catch_warnings():
        # Noise features make some classes crawl towards alpha -> inf; that
        # edge is handled in closed form, without a convergence warning.
        warnings.simplefilter("error")
        informative, random, detached = logme(x, y), logme(noise, y), logme(shuffled, y)
    assert informative > random
    assert informative > detached


def test_float_labels_that_are_integers_are_accepted() -> None:
    f, labels = _data(0, 50, 5)
    assert logme(f, labels.astype(float)) == logme(f, labels)


@pytest.mark.parametrize(
    "features,labels,exc,match",
    [
        (np.ones((10, 3)), np.zeros(9, int), ValueError, "same number of samples"),
        (np.ones(10), np.zeros(10, int), ValueError, "features must be 2-D"),
        (np.full((10, 3), np.nan), np.arange(10) % 2, ValueError, "features contains NaN"),
        (np.random.default_rng(0).normal(size=(10, 3)), np.zeros(10, int), ValueError, "one class"),
        (np.zeros((10, 3)), np.arange(10) % 2, ValueError, "rank 0"),
        (np.ones((10, 3)), np.arange(10) % 2 + 0.5, TypeError, "integer"),
        (np.ones((10, 3)), np.array([0.0, np.nan] * 5), ValueError, "labels contains NaN"),
        (np.ones((10, 3)), np.array(["a", "b"] * 5), TypeError, "labels must be integer"),
    ],
)
def test_bad_input(features, labels, exc, match) -> None:
    with pytest.raises(exc, match=match):
        logme(features, labels)
