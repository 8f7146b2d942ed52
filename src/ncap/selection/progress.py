"""Progress output for long selection runs: tqdm bars when tqdm is installed, plain lines if not."""

from __future__ import annotations

import sys
from typing import Any, TextIO


class Progress:
    """A counter over ``total`` items that prints to ``stream`` (stderr by default).

    With ``enabled=False`` it prints nothing. tqdm is optional: without it, each
    ``update`` prints one line, as it does when the stream is not a terminal.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        enabled: bool = True,
        unit: str = "it",
        stream: TextIO | None = None,
        leave: bool = True,
    ) -> None:
        self.total = total
        self.desc = desc
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.n = 0
        self._bar: Any = None
        # Bars only on a terminal; logs and pipes get plain lines.
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            try:
                from tqdm.auto import tqdm
            except ImportError:
                tqdm = None
            if tqdm is not None:
                self._bar = tqdm(
                    total=total,
                    desc=desc,
                    unit=unit,
                    file=self.stream,
                    leave=leave,
                    dynamic_ncols=True,
                )

    def update(self, n: int = 1, note: str = "") -> None:
        """Advance by ``n``; ``note`` says what just finished."""
        self.n += n
        if not self.enabled:
            return
        if self._bar is not None:
            if note:  # above the bar, so finished items stay listed
                self._bar.write(note, file=self.stream)
            self._bar.update(n)
        else:
            print(f"[{self.n}/{self.total}] {note or self.desc}", file=self.stream, flush=True)

    def write(self, msg: str) -> None:
        """Print a message without breaking the bar."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(msg, file=self.stream)
        else:
            print(msg, file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
