"""Type stubs for ncap._core, the compiled CPU core (cpp/bindings/bindings.cpp).

Private: use ``ncap.beff`` / ``ncap.degrees``, which check and convert their
inputs first. The arrays handed here must be 2-D float32 or float64 NumPy
arrays (any strides), one list per argument as ``ncap.beff`` takes them.
"""

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

#: SPEC section 3: ``|den| <= DEGENERATE_RTOL * scale`` means the denominator vanished.
DEGENERATE_RTOL: float
#: SPEC section 3: beta needs at least this many weight layers (three hidden layers).
MIN_BETA_LAYERS: int
#: SPEC section 2: degrees need at least this many weight layers.
MIN_DEGREE_LAYERS: int
#: The largest ``threads`` accepted (0 means all cores).
MAX_THREADS: int
#: Always False: the kernel runs on ncap's own helper threads, not OpenMP's.
openmp: bool

Strategy = Literal["auto", "gram", "rows"]
Isa = Literal["generic", "avx2", "avx512"]

def beff(
    acts: Sequence[np.ndarray],
    derivs: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    per_sample: bool,
    threads: int = 0,
    strategy: Strategy = "auto",
) -> dict[str, Any]:
    """The terms of SPEC section 3: value, numerator, denominator, scale, degenerate
    (floats, or length-B arrays when per_sample), layer_numerator / layer_denominator,
    widths, batch_size. ``strategy`` forces how the batch numerator is summed (tests)."""

def degrees(
    acts: Sequence[np.ndarray],
    derivs: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    threads: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(delta_in, delta_out) per weight layer, float64, Keras layout (n_{l-1}, n_l)."""

def available_threads() -> int:
    """Threads used for threads=0 (1 in a process forked after ncap was imported)."""

def in_forked_child() -> bool: ...
def numerator_strategies(widths: Sequence[int], batch: int) -> list[Literal["gram", "rows"]]:
    """The strategy strategy='auto' plans for each numerator layer l = 2..L-1."""

def isa() -> Isa:
    """The instruction set whose kernels run (the best this CPU and build support)."""

def supported_isas() -> list[Isa]: ...
def _force_isa(isa: Isa) -> Isa:
    """Tests and benchmarks only (not thread-safe): use another instruction set's kernels;
    returns the previous one."""

def fma_peak(
    threads: int = 1, seconds: float = 0.2, isa: Isa | Literal[""] = "", repeats: int = 5
) -> dict[str, Any]:
    """Benchmark helper: {"fmas_per_second", "threads", "isa"} of a register-bound loop."""
