"""Layer 3 of ncap: ``ncap select``, ranking backbones by predicted fine-tuned accuracy.

Needs the ``select`` extra (scikit-learn, SciPy, Dask, matplotlib) and, to train,
the ``tf`` extra. It builds on :mod:`ncap.tf`; its beta_eff comes from the
``BetaEff`` callback inside each training step (TF ops), not from the compiled
kernel of :mod:`ncap.arrays`.

Modules, in the order a run uses them:

* :mod:`.settings`: run settings from arguments (shared with the CLI);
* :mod:`.candidates`, :mod:`.dataset`, :mod:`.data`, :mod:`.example`: what to compare, on what;
* :mod:`.pipeline`: ``select`` = plan, execute, report;
* :mod:`.finetune`: fine-tuning one candidate; :mod:`.record`: its typed record;
* :mod:`.runner`, :mod:`.store`: in-process or Dask execution, the run directory;
* :mod:`.scoring`, :mod:`.predict`, :mod:`.baselines`, :mod:`.logme`, :mod:`.metrics`:
  the predictors and how rankings are judged;
* :mod:`.report`, :mod:`.plots`, :mod:`.progress`, :mod:`.cli`: what the user sees.
"""

from __future__ import annotations

from .pipeline import select
from .predict import Prediction, predict_final
from .report import SelectionReport

__all__ = ["Prediction", "SelectionReport", "predict_final", "select"]
