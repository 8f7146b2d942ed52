"""A candidate's record: what fine-tuning one candidate produced, typed and validated.

Written to ``OUT/candidates/NAME.json`` as each candidate finishes and read
back by ``resume``; :meth:`CandidateRecord.from_dict` checks every field, so a
hand-edited, truncated or foreign file is refused (and the candidate re-run)
rather than trusted.
"""

from __future__ import annotations

import math
import numbers
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

#: Version of the record layout written to candidates/NAME.json.
RECORD_VERSION = 1

Status = Literal["ok", "failed"]
#: ``error.stage`` of a candidate stopped at its time limit (``candidate_timeout``).
TIMEOUT_STAGE = "timeout"
Curve = list  # list[float | None]: one value per trained epoch, None where not finite


class RecordError(ValueError):
    """A stored record that does not have the layout of :class:`CandidateRecord`."""


@dataclass(frozen=True)
class ErrorInfo:
    """Why a candidate failed: the message, the stage it failed in, the traceback."""

    message: str
    stage: str = ""
    traceback: str = ""


@dataclass(frozen=True)
class CandidateRecord:
    """One candidate's training run. Curves have one entry per trained epoch."""

    name: str
    candidate: dict[str, Any]
    key: str
    status: Status
    error: ErrorInfo | None = None
    epochs_trained: int = 0
    beta: Curve = field(default_factory=list)
    # With beta="both": the epoch protocol's curve beside ``beta`` (the step one); else [].
    beta_epoch: Curve = field(default_factory=list)
    val_accuracy: Curve = field(default_factory=list)
    val_loss: Curve = field(default_factory=list)
    train_accuracy: Curve = field(default_factory=list)
    train_loss: Curve = field(default_factory=list)
    logme: float | None = None
    logme_error: str | None = None
    feature_dim: int | None = None
    backbone_params: int | None = None
    adaptations: list[str] = field(default_factory=list)  # input steps, as adapt.py says them
    truth: float | None = None
    truth_epoch: int | None = None
    # The test accuracy of each truth seed (seed, seed + 1, ...), the first being ``truth``.
    seed_truths: list[float] = field(default_factory=list)
    tf_threads: int | None = None  # TensorFlow's intra-op threads in the run (0: its default)
    timing: dict[str, float] = field(default_factory=dict)
    version: int = RECORD_VERSION

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def timed_out(self) -> bool:
        """Stopped at its time limit (a failed record whose stage is ``"timeout"``)."""
        return self.error is not None and self.error.stage == TIMEOUT_STAGE

    @classmethod
    def failed(
        cls,
        name: str,
        candidate: dict[str, Any],
        err: BaseException | str,
        *,
        key: str = "",
        stage: str = "",
        tb: str | None = None,
        timing: dict[str, float] | None = None,
    ) -> CandidateRecord:
        """The record of a candidate that could not be run to the end."""
        if isinstance(err, BaseException):
            msg = f"{type(err).__name__}: {err}"
            tb = tb or "".join(traceback.format_exception(type(err), err, err.__traceback__))
        else:
            msg = str(err)
        return cls(
            name=name,
            candidate=dict(candidate),
            key=key,
            status="failed",
            error=ErrorInfo(msg, stage, tb or ""),
            timing=dict(timing or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (no NaN: non-finite values were stored as None)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any) -> CandidateRecord:
        """Validate a stored record; :class:`RecordError` says which field is wrong."""
        if not isinstance(d, dict):
            raise RecordError(f"expected a JSON object, got {type(d).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise RecordError(f"unknown fields {unknown}")
        missing = sorted(known - set(d))  # to_dict writes every field
        if missing:
            raise RecordError(f"missing fields {missing}")
        version = d["version"]
        if isinstance(version, bool) or version != RECORD_VERSION:
            raise RecordError(f"version: expected {RECORD_VERSION}, got {version!r}")
        status = d.get("status")
        if status not in ("ok", "failed"):
            raise RecordError(f"status: expected 'ok' or 'failed', got {status!r}")
        err = d.get("error")
        error = None
        if err is not None:
            if not isinstance(err, dict) or not isinstance(err.get("message"), str):
                raise RecordError("error: expected an object with a 'message' string")
            error = ErrorInfo(
                err["message"],
                _str(err.get("stage", ""), "error.stage"),
                _str(err.get("traceback", ""), "error.traceback"),
            )
        if status == "failed" and error is None:
            raise RecordError("error: a failed record needs its error")
        curves = {
            c: _curve(d.get(c, []), c)
            for c in (
                "beta",
                "beta_epoch",
                "val_accuracy",
                "val_loss",
                "train_accuracy",
                "train_loss",
            )
        }
        epochs = _int(d.get("epochs_trained", 0), "epochs_trained")
        if status == "ok":
            for c in ("beta", "val_accuracy"):
                if len(curves[c]) != epochs:
                    raise RecordError(f"{c}: {len(curves[c])} values for {epochs} epochs")
            if curves["beta_epoch"] and len(curves["beta_epoch"]) != epochs:
                raise RecordError(
                    f"beta_epoch: {len(curves['beta_epoch'])} values for {epochs} epochs"
                )
        seed_truths = d.get("seed_truths", [])
        if not isinstance(seed_truths, list) or not all(_is_finite_number(v) for v in seed_truths):
            raise RecordError("seed_truths: expected a list of finite numbers")
        candidate = _description(d.get("candidate"))
        timing = d.get("timing", {})
        if not isinstance(timing, dict) or not all(
            isinstance(k, str) and _is_finite_number(v) for k, v in timing.items()
        ):
            raise RecordError("timing: expected an object of finite numbers")
        return cls(
            name=_str(d.get("name"), "name"),
            candidate=candidate,
            key=_str(d.get("key"), "key"),
            status=status,
            error=error,
            epochs_trained=epochs,
            **curves,
            logme=_opt_float(d.get("logme"), "logme"),
            logme_error=None
            if d.get("logme_error") is None
            else _str(d.get("logme_error"), "logme_error"),
            feature_dim=_opt_int(d.get("feature_dim"), "feature_dim"),
            backbone_params=_opt_int(d.get("backbone_params"), "backbone_params"),
            adaptations=_str_list(d.get("adaptations", []), "adaptations"),
            truth=_opt_float(d.get("truth"), "truth"),
            truth_epoch=_opt_int(d.get("truth_epoch"), "truth_epoch"),
            seed_truths=[float(v) for v in seed_truths],
            tf_threads=_opt_int(d.get("tf_threads"), "tf_threads"),
            timing={k: float(v) for k, v in timing.items()},
            version=RECORD_VERSION,
        )


def finite_list(values: Any) -> list[float | None]:
    """A curve for a record: floats, None where a value was not finite."""
    return [float(v) if v is not None and math.isfinite(float(v)) else None for v in values]


def _is_finite_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


def _str_list(v: Any, name: str) -> list[str]:
    if not isinstance(v, list):
        raise RecordError(f"{name}: expected a list of strings, got {type(v).__name__}")
    return [_str(x, f"{name}[{i}]") for i, x in enumerate(v)]


def _str(v: Any, name: str) -> str:
    if not isinstance(v, str):
        raise RecordError(f"{name}: expected a string, got {type(v).__name__}")
    return v


def _int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise RecordError(f"{name}: expected a non-negative integer, got {v!r}")
    return v


def _opt_int(v: Any, name: str) -> int | None:
    return None if v is None else _int(v, name)


def _opt_float(v: Any, name: str) -> float | None:
    if v is None:
        return None
    if not _is_finite_number(v):
        raise RecordError(f"{name}: expected a finite number or null, got {v!r}")
    return float(v)


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, bool)) or _is_finite_number(v)


def _description(v: Any) -> dict[str, Any]:
    """A candidate's description (``CandidateSpec.describe``): flat, scalars or lists of them."""
    if not isinstance(v, dict) or not all(
        isinstance(k, str)
        and (_is_scalar(x) or (isinstance(x, list) and all(_is_scalar(e) for e in x)))
        for k, x in v.items()
    ):
        raise RecordError(
            "candidate: expected an object of strings, numbers, booleans, null or lists of them"
        )
    return v


def _curve(v: Any, name: str) -> list[float | None]:
    if not isinstance(v, list):
        raise RecordError(f"{name}: expected a list, got {type(v).__name__}")
    return [_opt_float(x, f"{name}[{i}]") for i, x in enumerate(v)]
