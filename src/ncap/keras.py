"""``ncap.keras.BetaEff``: an alias of :class:`ncap.tf.BetaEff` (imports TensorFlow)."""

from __future__ import annotations

from .tf.callback import BetaEff

__all__ = ["BetaEff"]
