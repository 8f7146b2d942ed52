"""ncap: neural capacitance (beta_eff) in closed form.

``import ncap`` needs only NumPy; the TensorFlow front-end and the model
selection tools are imported on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ._api import beff, degrees
from ._cuda import cuda_available
from ._result import BetaResult, LayerTerms

__version__ = "0.1.0"

# Public names that live in modules needing TensorFlow, scikit-learn or Dask.
_LAZY = {
    "attach_probe": "ncap.tf",
    "capture": "ncap.tf",
    "Capture": "ncap.tf",
    "predict_final": "ncap.predict",
    "Prediction": "ncap.predict",
    "select": "ncap.selection",
}
_LAZY_MODULES = {"keras": "ncap.keras", "tf": "ncap.tf", "baselines": "ncap.baselines"}

__all__ = [
    "BetaResult",
    "LayerTerms",
    "beff",
    "cuda_available",
    "degrees",
    *_LAZY,
    *_LAZY_MODULES,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    if name in _LAZY_MODULES:
        return import_module(_LAZY_MODULES[name])
    raise AttributeError(f"module 'ncap' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
