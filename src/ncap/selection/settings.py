"""The settings of a selection run, validated once, from ``select()``'s arguments or the CLI.

Every rule about a run setting (its range, its default, how the built-in
example changes the default) lives here; :mod:`.cli` parses text and calls the
same checks, :mod:`.pipeline` takes a :class:`RunSettings`.
"""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import asdict, dataclass
from typing import Any

from ..arrays.spec import check_hidden
from . import example
from .finetune import TrainSettings
from .scoring import BETA_PROTOCOLS

#: Defaults for the user's own data (the built-in example has :data:`example.SETTINGS`).
USER_DEFAULTS = {"epochs": 5, "truth_epochs": None, "batch_size": 64}
#: The paper's final epoch, where curve extrapolation reads off when no truth epoch is set.
DEFAULT_FINAL_EPOCH = 50
DEFAULT_HIDDEN = (256, 128, 64)
#: TensorFlow threads per candidate. Fixed, not derived from the worker count: the thread
#: count changes float sums and so the training, and a report must not depend on --workers.
DEFAULT_THREADS = 1


def check_int(value: Any, name: str, lo: int) -> int:
    """An integer >= lo; the message names the setting."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    return int(value)


def check_learning_rate(value: Any) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"learning rate must be positive, got {value!r}")
    return float(value)


def check_dropout(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < 1:
        raise ValueError(f"dropout must be in [0, 1), got {value!r}")
    return float(value)


def check_timeout(value: Any) -> float | None:
    """``candidate_timeout``: seconds a candidate may run (None: no limit)."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"candidate timeout must be a positive number of seconds, got {value!r}")
    return float(value)


def check_beta(value: Any) -> str:
    """The per-epoch beta protocol: one of :data:`ncap.selection.scoring.BETA_PROTOCOLS`."""
    if value not in BETA_PROTOCOLS:
        raise ValueError(f"beta must be one of {', '.join(BETA_PROTOCOLS)}, got {value!r}")
    return str(value)


def is_example(data: Any) -> bool:
    """``data`` names the built-in example (None or "example")."""
    return data is None or (isinstance(data, str) and data == "example")


@dataclass(frozen=True)
class RunSettings:
    """Everything that shapes a selection run except the candidates and the data."""

    epochs: int
    truth_epochs: int | None
    final_epoch: int
    k: int
    t0: int | None  # 0-based first epoch of ncap's window; None: chosen by BIC
    batch_size: int
    learning_rate: float
    seed: int
    hidden: tuple[int, ...]
    dropout: float
    workers: int
    scheduler: str | None
    threads: int  # TensorFlow intra-op (and inter-op) threads per candidate
    example: bool
    candidate_timeout: float | None = None  # seconds; a candidate running longer is stopped
    retries: int = 0  # reruns of a candidate whose worker died while it ran (Dask)
    beta: str = "step"  # per-epoch beta protocol (SPEC section 6): "step", "epoch" or "both"
    truth_seeds: int = 1  # evaluation mode: truth = mean test accuracy over this many seeds

    @classmethod
    def from_arguments(
        cls,
        *,
        data: Any = None,
        epochs: int | None = None,
        truth_epochs: int | None = None,
        final_epoch: int | None = None,
        k: int = 5,
        t0: int | None = None,
        batch_size: int | None = None,
        learning_rate: float = 1e-3,
        seed: int = 0,
        hidden: Any = DEFAULT_HIDDEN,
        dropout: float = 0.4,
        workers: int = 1,
        scheduler: str | None = None,
        threads: int | None = None,
        candidate_timeout: float | None = None,
        retries: int = 0,
        beta: str = "step",
        truth_seeds: int = 1,
    ) -> RunSettings:
        """Validate ``select()``'s arguments; defaults depend on whether data is the example."""
        ex = is_example(data)
        defaults = example.SETTINGS if ex else USER_DEFAULTS
        epochs = check_int(defaults["epochs"] if epochs is None else epochs, "epochs", 2)
        if truth_epochs is None:
            truth_epochs = defaults["truth_epochs"]
        if truth_epochs is not None:
            truth_epochs = check_int(truth_epochs, "truth_epochs", epochs)
        batch_size = check_int(
            defaults["batch_size"] if batch_size is None else batch_size, "batch_size", 1
        )
        k = check_int(k, "k", 2)
        if k > epochs:
            raise ValueError(
                f"k={k} needs at least {k} observed epochs, got epochs={epochs}; "
                "observe more epochs or pass a smaller k"
            )
        if t0 is not None:
            t0 = check_int(t0, "t0", 0)
            if t0 + k > epochs:
                raise ValueError(f"t0={t0} with k={k} runs past the {epochs} observed epochs")
        final_epoch = check_int(
            final_epoch if final_epoch is not None else truth_epochs or DEFAULT_FINAL_EPOCH,
            "final_epoch",
            1,
        )
        truth_seeds = check_int(truth_seeds, "truth_seeds", 1)
        if truth_seeds > 1 and truth_epochs is None:
            raise ValueError(
                f"truth_seeds={truth_seeds} needs evaluation mode: pass truth_epochs (the "
                "truth is the test accuracy at that epoch, averaged over the seeds)"
            )
        if scheduler is not None and not isinstance(scheduler, str):
            raise TypeError(f"scheduler must be an address string, got {type(scheduler).__name__}")
        return cls(
            epochs=epochs,
            truth_epochs=truth_epochs,
            final_epoch=final_epoch,
            k=k,
            t0=t0,
            batch_size=batch_size,
            learning_rate=check_learning_rate(learning_rate),
            seed=check_int(seed, "seed", 0),
            hidden=check_hidden(hidden),
            dropout=check_dropout(dropout),
            workers=check_int(workers, "workers", 1),
            scheduler=scheduler,
            threads=DEFAULT_THREADS if threads is None else check_int(threads, "threads", 1),
            example=ex,
            candidate_timeout=check_timeout(candidate_timeout),
            retries=check_int(retries, "retries", 0),
            beta=check_beta(beta),
            truth_seeds=truth_seeds,
        )

    def train_settings(self) -> TrainSettings:
        """What shapes each candidate's training (and so its record key)."""
        return TrainSettings(
            self.epochs,
            self.truth_epochs,
            self.batch_size,
            self.learning_rate,
            self.seed,
            self.hidden,
            self.dropout,
            threads=self.threads,
            beta=self.beta,
            truth_seeds=self.truth_seeds,
        )

    def to_dict(self) -> dict[str, Any]:
        """The settings as report.json and run.json show them (``t0`` 1-based, like ``--t0``)."""
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        d["optimizer"] = "adam"
        d["t0"] = None if self.t0 is None else self.t0 + 1
        return d


def check_out(out: Any, resume: bool) -> str | None:
    """The run directory argument: a path or None (``resume`` needs one)."""
    if out is None:
        if resume:
            raise ValueError("resume=True needs out, the run directory to resume")
        return None
    return os.fspath(out)
