"""Import TensorFlow and Keras once, and refuse any Keras backend but TensorFlow."""

from __future__ import annotations

try:
    import keras
    import tensorflow as tf
except ImportError as err:  # pragma: no cover - depends on the install
    raise ImportError(
        f"ncap.tf needs TensorFlow and Keras 3 ({err}); install them with: pip install 'ncap[tf]'"
    ) from err

if keras.backend.backend() != "tensorflow":
    raise ImportError(
        "ncap.tf needs Keras 3 with the TensorFlow backend, but Keras is running on "
        f"{keras.backend.backend()!r}. Set the environment variable KERAS_BACKEND=tensorflow "
        "before importing keras (or edit ~/.keras/keras.json)."
    )

__all__ = ["keras", "tf"]
