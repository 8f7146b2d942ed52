"""TensorFlow/Keras front-end of ncap: the probe, the capture and beta_eff of a model.

Importing this module imports TensorFlow and needs Keras 3 on the TensorFlow
backend. ``ncap.attach_probe``, ``ncap.capture`` and ``ncap.Capture`` are the
same objects, loaded on first use so that ``import ncap`` stays TensorFlow-free.
"""

from __future__ import annotations

from ._backend import keras as _keras  # noqa: F401  (checks the Keras backend)
from .capture import Capture, capture
from .model_beff import beff_model
from .probe import attach_probe

__all__ = ["Capture", "attach_probe", "beff_model", "capture"]
