"""Layer 2 of ncap: TensorFlow/Keras. The probe, the capture, beta of a model, the callback.

Importing this package imports TensorFlow (the ``tf`` extra) and needs Keras 3 on
the TensorFlow backend. It builds on :mod:`ncap.arrays` and never imports
:mod:`ncap.selection`.

* :mod:`.probe`: ``attach_probe``; :mod:`.chain`: finding a model's probe layers,
  the one forward replay over them, the per-model cache; :mod:`.losses`: per-sample losses;
  :mod:`.options`: the option values (``Literal`` types) and their checks;
* :mod:`.capture`: z, s and g from one forward pass; :mod:`.model`: ``beff`` on a
  model (closed form through :mod:`ncap.arrays`, or :mod:`.autodiff`);
* :mod:`.callback`: ``BetaEff``. Step protocol: :mod:`.train_step` (the training
  step with the capture), :mod:`.ingraph` (the closed form as TF ops),
  :mod:`.recorder` (the in-graph buffer), :mod:`.fit_hook` (the step runs for
  one ``fit`` only). Epoch protocol: :mod:`.epoch_pass`.
"""

from __future__ import annotations

from ._backend import keras as _keras  # noqa: F401  (checks the Keras backend)
from .callback import BetaEff
from .capture import Capture, capture
from .model import beff
from .probe import attach_probe

__all__ = ["BetaEff", "Capture", "attach_probe", "beff", "capture"]
