"""Layer 1 of ncap: beta_eff and degrees from captured arrays (needs only NumPy).

Everything here works on per-layer arrays: conversion of user arrays
(:mod:`.convert`), the SPEC constants (:mod:`.spec`), the call into the
compiled C++ core or its CUDA twin (:mod:`.kernel`, :mod:`.cuda`), the result
types (:mod:`.result`) and a plain NumPy reference (:mod:`.reference`). It
never imports TensorFlow or the selection layer.
"""

from __future__ import annotations

from .cuda import cuda_available
from .kernel import beff, degrees
from .result import BetaResult, LayerTerms
from .spec import DEGENERATE_RTOL, MIN_BETA_LAYERS, REDUCTIONS

__all__ = [
    "DEGENERATE_RTOL",
    "MIN_BETA_LAYERS",
    "REDUCTIONS",
    "BetaResult",
    "LayerTerms",
    "beff",
    "cuda_available",
    "degrees",
]
