"""ncap: neural capacitance (beta_eff) in closed form.

Three layers, each a subpackage that knows only itself and the layers below:

* :mod:`ncap.arrays`: beta_eff and degrees from captured arrays (NumPy only);
* :mod:`ncap.tf`: the probe, the capture, beta of a Keras model, the callback
  (the ``tf`` extra);
* :mod:`ncap.selection`: ``ncap select``, ranking backbones by predicted
  fine-tuned accuracy (the ``select`` extra).

``import ncap`` needs only NumPy; names from the other layers load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ._dispatch import beff
from .arrays import BetaResult, LayerTerms, cuda_available, degrees

__version__ = "0.2.0"

# Public names that live in layers needing TensorFlow, scikit-learn or Dask.
_LAZY = {
    "attach_probe": "ncap.tf",
    "capture": "ncap.tf",
    "Capture": "ncap.tf",
    "BetaEff": "ncap.tf",
    "predict_final": "ncap.selection",
    "Prediction": "ncap.selection",
    "select": "ncap.selection",
    "SelectionReport": "ncap.selection",
}
# Subpackages and the ``ncap.keras`` alias module, importable as attributes.
_SUBMODULES = ("arrays", "tf", "selection", "keras")

# ``from ncap import *`` gives the NumPy-only names: it must not import TensorFlow. The
# lazy names above are public too (``ncap.attach_probe``), just not star-imported.
__all__ = ["BetaResult", "LayerTerms", "beff", "cuda_available", "degrees"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return import_module(f"ncap.{name}")
    raise AttributeError(f"module 'ncap' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_LAZY) | set(_SUBMODULES))
