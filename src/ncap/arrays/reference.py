"""The closed form of SPEC section 3 in plain NumPy.

A readable second implementation: the benchmarks compare the compiled kernel
against it, and the fuzz tests use it as the expected value. It forms the
B x B Gram matrices with NumPy matmuls; it does no input checking.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .spec import degenerate_ratio


def beff_numpy(
    acts: Sequence[np.ndarray],
    derivs: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    reduction: str = "batch",
) -> dict:
    """Returns value, numerator, denominator, scale, degenerate (floats or length-B arrays)."""
    n_layers = len(acts)
    z = [np.asarray(a, np.float64) for a in acts]  # z[l] = z^l
    s = [None] + [np.asarray(d, np.float64) for d in derivs]  # s[l] = s^l, l >= 1
    g = [None] + [np.asarray(x, np.float64) for x in grads]  # g[l] = g^l, l >= 1
    batch = z[0].shape[0]
    Z = [zl.sum(axis=1) for zl in z]
    S = [None] + [gl.sum(axis=1) for gl in g[1:]]
    N = [None] + [sl.sum(axis=1) for sl in s[1:]]

    den_b = np.zeros(batch)
    scale_b = np.zeros(batch)
    for l in range(1, n_layers):  # l = 1 .. L-1
        den_b += Z[l - 1] * N[l] * S[l + 1]
        scale_b += np.abs(z[l - 1]).sum(1) * np.abs(s[l]).sum(1) * np.abs(g[l + 1]).sum(1)

    if reduction == "sample":
        num = np.zeros(batch)
        for l in range(2, n_layers):
            num += (
                Z[l - 2]
                * np.einsum("bj,bj->b", z[l - 1], s[l - 1])
                * np.einsum("bi,bi->b", s[l], g[l])
                * S[l + 1]
            )
        den, scale = den_b, scale_b
    else:
        num = 0.0
        for l in range(2, n_layers):
            A = s[l] @ g[l].T  # A[b, b'] = s^l_b . g^l_b'
            C = z[l - 1] @ s[l - 1].T  # C[b, b'] = z^{l-1}_b . s^{l-1}_b'
            num += float(S[l + 1] @ (A * C) @ Z[l - 2]) / batch**2
        den, scale = float(den_b.mean()), float(scale_b.mean())

    value, degenerate = degenerate_ratio(num, den, scale)
    if reduction == "batch":
        return dict(
            value=value, numerator=float(num), denominator=den, scale=scale, degenerate=degenerate
        )
    return dict(value=value, numerator=num, denominator=den, scale=scale, degenerate=degenerate)
