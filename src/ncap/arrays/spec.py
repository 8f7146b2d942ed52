"""The SPEC constants and the rules built on them, in one place (docs/SPEC.md).

The numbers come from the compiled core (``cpp/include/ncap/core.hpp``), so the
C++ kernel, the CUDA kernel, the NumPy reference, the in-graph TensorFlow form
and the autodiff path all use the same ones. Every check here raises an error
that names the argument.
"""

from __future__ import annotations

import numbers
from typing import Any, Literal

import numpy as np

from .. import _core

#: SPEC section 3: ``|den| <= DEGENERATE_RTOL * scale`` means the denominator vanished.
DEGENERATE_RTOL: float = float(_core.DEGENERATE_RTOL)
#: SPEC section 3: beta needs L >= 4 weight layers (three hidden layers).
MIN_BETA_LAYERS: int = int(_core.MIN_BETA_LAYERS)
#: SPEC section 2: degrees are defined from two weight layers on.
MIN_DEGREE_LAYERS: int = int(_core.MIN_DEGREE_LAYERS)
#: The two reductions of SPEC section 3.
REDUCTIONS: tuple[str, ...] = ("batch", "sample")
Reduction = Literal["batch", "sample"]
#: The largest thread count accepted (anything above is a typo, not a machine).
MAX_THREADS: int = int(_core.MAX_THREADS)


def shallow_probe_error(n_layers: int, argument: str, hint: str) -> ValueError:
    """The one message for a probe with fewer than three hidden layers."""
    return ValueError(
        f"{argument}: a probe needs at least three hidden layers (L >= {MIN_BETA_LAYERS} weight "
        f"layers), got L = {n_layers}. With fewer, beta_eff is identically 0 under softmax "
        f"cross-entropy (SPEC section 3), so it carries no information; {hint}"
    )


def check_hidden(hidden: Any, argument: str = "hidden") -> tuple[int, ...]:
    """A probe's hidden widths: at least three positive integers."""
    try:
        widths = tuple(hidden)
    except TypeError:
        raise TypeError(f"{argument}: expected a sequence of widths, got {hidden!r}") from None
    for w in widths:
        if isinstance(w, bool) or not isinstance(w, numbers.Integral) or w < 1:
            raise ValueError(f"{argument}: widths must be positive integers, got {hidden!r}")
    if len(widths) + 1 < MIN_BETA_LAYERS:
        raise shallow_probe_error(
            len(widths) + 1, argument, "give at least three hidden widths, e.g. (256, 128, 64)"
        )
    return tuple(int(w) for w in widths)


def check_reduction(reduction: Any) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: expected one of {REDUCTIONS}, got {reduction!r}")
    return str(reduction)


def check_threads(threads: Any) -> int:
    """``threads``: an integer in 0..MAX_THREADS (0 = all cores)."""
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral):
        raise TypeError(f"threads: expected an integer (0 = all cores), got {threads!r}")
    if not 0 <= threads <= MAX_THREADS:
        raise ValueError(f"threads: expected 0 (all cores) .. {MAX_THREADS}, got {threads!r}")
    return int(threads)


def degenerate_ratio(num: Any, den: Any, scale: Any) -> tuple[Any, Any]:
    """SPEC section 3's ratio: (value, degenerate), value 0 where the denominator vanished.

    NumPy scalars or arrays; the compiled kernels apply the same rule in C++.
    """
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    degenerate = np.abs(den) <= DEGENERATE_RTOL * np.asarray(scale, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.where(degenerate, 0.0, num / np.where(degenerate, 1.0, den))
    if value.ndim == 0:
        return float(value), bool(degenerate)
    return value, degenerate
