"""The run directory of ``ncap select``.

It holds ``run.json``, ``candidates/NAME.json``, ``report.json`` and ``plots/``.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from .record import CandidateRecord, RecordError


def write_json(path: str, obj: Any) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".json.tmp", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, allow_nan=False)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a run directory is meant to be read
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class RunStore:
    """The run directory: ``run.json``, ``candidates/NAME.json``, ``report.json``, ``plots/``."""

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.out = os.path.abspath(os.fspath(out))
        if os.path.exists(self.out) and not os.path.isdir(self.out):
            raise ValueError(f"out: {self.out!r} exists and is not a directory")
        self.candidates_dir = os.path.join(self.out, "candidates")

    def path(self, name: str) -> str:
        return os.path.join(self.candidates_dir, f"{name}.json")

    def load(self, name: str) -> tuple[CandidateRecord | None, str | None]:
        """A stored record and None, or None and why it cannot be reused.

        Absent is (None, None); an unreadable, torn or malformed file is
        (None, reason): the candidate is run again, never trusted.
        """
        path = self.path(name)
        if not os.path.exists(path):
            return None, None
        try:
            with open(path) as f:
                raw = json.load(f, parse_constant=_refuse_constant)
            rec = CandidateRecord.from_dict(raw)
        except (OSError, ValueError, RecursionError) as err:
            return None, f"{type(err).__name__}: {err}"
        if rec.name != name:
            return None, f"the file holds candidate {rec.name!r}"
        return rec, None

    def save(self, record: CandidateRecord) -> None:
        write_json(self.path(record.name), record.to_dict())

    def clear(self) -> None:
        """Remove stored candidate records (a fresh, non-resumed run)."""
        if os.path.isdir(self.candidates_dir):
            for f in os.listdir(self.candidates_dir):
                if f.endswith(".json"):
                    os.remove(os.path.join(self.candidates_dir, f))


def _refuse_constant(name: str) -> Any:
    raise RecordError(f"{name} is not a number a record may hold")
