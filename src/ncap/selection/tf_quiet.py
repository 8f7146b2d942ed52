"""Keep TensorFlow's start-up log off the console when it finds no GPU, unless asked.

TensorFlow writes C++ log lines when it loads (oneDNN notes, "Could not find cuda
drivers") and when it first looks for a GPU (``E ... failed call to cuInit``). Some
are written before its logging is initialised, so ``TF_CPP_MIN_LOG_LEVEL`` alone
does not hide them. :func:`quiet_tensorflow` imports TensorFlow and looks for GPUs
with the process's stderr (file descriptor 2) sent to a temporary file, then replays
what was captured when a GPU was found (those lines say which) or the import failed.

Asked for: ``NCAP_TF_LOG=1`` in the environment (``ncap select --tf-log`` sets it),
or, without ``NCAP_TF_LOG``, ``TF_CPP_MIN_LOG_LEVEL`` set by the user: then nothing
is hidden. Dask worker processes started by the run inherit the decision.
"""

from __future__ import annotations

import os
import sys
import tempfile

#: Environment variable that shows TensorFlow's own log (any value but "" or "0").
SHOW_ENV = "NCAP_TF_LOG"


def tf_log_asked() -> bool:
    """The user asked to see TensorFlow's log: ``NCAP_TF_LOG``, else their own log level."""
    show = os.environ.get(SHOW_ENV)
    if show is not None:
        return show not in ("", "0")
    return "TF_CPP_MIN_LOG_LEVEL" in os.environ


def quiet_tensorflow() -> bool:
    """Import TensorFlow without its start-up log unless asked; True when lines were hidden.

    Does nothing when TensorFlow is already imported or the log was asked for.
    """
    if "tensorflow" in sys.modules or tf_log_asked():
        return False
    # Later C++ lines too, errors included: on CPU they are noise (a NodeDef attribute
    # note on every fit); real failures still raise Python exceptions.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    os.environ[SHOW_ENV] = "0"  # worker processes started from here decide the same
    sys.stderr.flush()
    saved = os.dup(2)
    captured = tempfile.TemporaryFile()
    gpus: list[object] = []
    try:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            gpus = list(tf.config.list_physical_devices("GPU"))
        finally:
            os.dup2(saved, 2)
    except BaseException:
        _replay(captured)
        raise
    finally:
        os.close(saved)
    if gpus:
        _replay(captured)
    captured.close()
    return not gpus


def _replay(captured: object) -> None:
    f = captured  # a binary temporary file
    f.seek(0)  # type: ignore[attr-defined]
    text = f.read().decode(errors="replace")  # type: ignore[attr-defined]
    if text:
        sys.stderr.write(text)
        sys.stderr.flush()
