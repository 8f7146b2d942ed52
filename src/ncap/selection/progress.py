"""What a selection run prints on stderr while it runs: a header, then per-candidate progress.

Progress arrives as small events (plain dicts, so a Dask worker can send them
with ``worker.log_event`` and the client receives them through
``client.subscribe_topic``; in this process they come straight from the
training callback):

* ``{"event": "start", "name": NAME}``: the candidate began (built, LogME, training);
* ``{"event": "epoch", "name": NAME, "epoch": E, "val_accuracy": A}``: epoch E (1-based) ended.

On a terminal, :class:`RunProgress` draws tqdm bars: one for the whole run (in
epochs over all candidates, with its ETA) and one per running candidate, named,
with the epoch, its ETA and the last validation accuracy. Anywhere else (a log
file, a pipe, CI) it prints plain lines: when a candidate starts, when its
observed epochs are done, at most one line per ``line_every_s`` seconds in
between, and when it finishes.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

#: Dask event topic of a run's progress events (the run adds a token to keep runs apart).
EVENT_TOPIC = "ncap-progress"


def start_event(name: str) -> dict[str, Any]:
    return {"event": "start", "name": name}


def epoch_event(name: str, epoch: int, logs: dict[str, Any]) -> dict[str, Any]:
    """The event after 0-based Keras epoch ``epoch`` (sent 1-based)."""
    acc = logs.get("val_accuracy")
    return {
        "event": "epoch",
        "name": name,
        "epoch": int(epoch) + 1,
        "val_accuracy": None if acc is None else float(acc),
    }


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _is_terminal(stream: TextIO) -> bool:
    """A terminal with a known width (tqdm draws nothing at width 0, e.g. a bare pty)."""
    try:
        return bool(stream.isatty()) and os.get_terminal_size(stream.fileno()).columns > 0
    except (AttributeError, OSError, ValueError):
        return False


class _Running:
    """One running candidate: when it started, its last epoch, its bar or last line time."""

    def __init__(self, name: str, index: int, now: float) -> None:
        self.name = name
        self.index = index
        self.t_start = now
        self.t_line = now
        self.epoch = 0
        self.bar: Any = None
        self.slot = 0

    def eta(self, epochs: int, now: float) -> float:
        if self.epoch <= 0:
            return math.nan
        return (now - self.t_start) / self.epoch * (epochs - self.epoch)


class RunProgress:
    """Progress of a selection run over ``n_jobs`` candidates of ``epochs`` epochs each.

    ``observed`` is the number of epochs every predictor reads (a plain line
    marks it). ``interactive`` (default: the stream is a terminal) chooses bars
    or plain lines. Thread-safe: Dask events arrive on the client's thread.
    """

    def __init__(
        self,
        n_jobs: int,
        epochs: int,
        observed: int,
        *,
        n_total: int | None = None,
        enabled: bool = True,
        stream: TextIO | None = None,
        interactive: bool | None = None,
        line_every_s: float = 30.0,
    ) -> None:
        self.n_jobs = n_jobs
        self.n_total = n_jobs if n_total is None else n_total
        self.epochs = epochs
        self.observed = observed
        self.enabled = enabled
        self.stream = stream or sys.stderr
        if interactive is None:
            interactive = _is_terminal(self.stream)
        self.interactive = interactive
        self.line_every_s = line_every_s
        self._lock = threading.RLock()
        self._running: dict[str, _Running] = {}
        self._done: set[str] = set()
        self._started = 0
        self._finished = self.n_total - n_jobs  # reused ones count as finished
        self._epochs_done = 0
        self._t0: float | None = None
        self._overall: Any = None

    # --- output -----------------------------------------------------------------

    def write(self, msg: str) -> None:
        """Print a line (above the bars on a terminal)."""
        if not self.enabled:
            return
        with self._lock:
            if self._overall is not None:
                from tqdm import tqdm

                tqdm.write(msg, file=self.stream)
            else:
                print(msg, file=self.stream, flush=True)

    def header(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def _bars(self) -> bool:
        return self.enabled and self.interactive

    def _ensure_overall(self) -> None:
        if self._overall is None and self._bars():
            from tqdm import tqdm

            self._overall = tqdm(
                total=self.n_jobs * self.epochs,
                desc=f"all {self.n_jobs} candidates",
                unit="epoch",
                file=self.stream,
                position=0,
                dynamic_ncols=True,
                mininterval=0,  # one redraw per epoch: epochs are slow
                leave=False,
            )

    # --- events -----------------------------------------------------------------

    def handle(self, event: dict[str, Any]) -> None:
        """Apply one progress event (from this process or a Dask worker)."""
        kind = event.get("event")
        name = str(event.get("name", "?"))
        if kind == "start":
            self.started(name)
        elif kind == "epoch":
            self.epoch(name, int(event.get("epoch", 0)), event.get("val_accuracy"))

    def epoch_callback(self, name: str) -> Callable[[int, dict[str, Any]], None]:
        """``on_epoch(epoch, logs)`` for :func:`~ncap.selection.finetune.finetune_candidate`."""

        def on_epoch(epoch: int, logs: dict[str, Any]) -> None:
            self.handle(epoch_event(name, epoch, logs))

        return on_epoch

    def started(self, name: str) -> None:
        now = time.perf_counter()
        with self._lock:
            if self._t0 is None:
                self._t0 = now
            if name in self._running or name in self._done:
                return
            self._started += 1
            run = _Running(name, self.n_total - self.n_jobs + self._started, now)
            self._running[name] = run
            if not self.enabled:
                return
            if self._bars():
                self._ensure_overall()
                from tqdm import tqdm

                used = {r.slot for r in self._running.values()}
                run.slot = next(i for i in range(1, len(used) + 2) if i not in used)
                run.bar = tqdm(
                    total=self.epochs,
                    desc=f"[{run.index}/{self.n_total}] {name}",
                    unit="epoch",
                    file=self.stream,
                    position=run.slot,
                    dynamic_ncols=True,
                    mininterval=0,  # one redraw per epoch: epochs are slow
                    leave=False,
                )
            else:
                self.write(
                    f"[{run.index}/{self.n_total}] {name}: started ({self.epochs} epochs to train)"
                )

    def epoch(self, name: str, epoch: int, val_accuracy: float | None = None) -> None:
        now = time.perf_counter()
        with self._lock:
            if name in self._done:  # a late Dask event
                return
            run = self._running.get(name)
            if run is None:
                self.started(name)
                run = self._running[name]
            step = max(0, epoch - run.epoch)
            run.epoch = max(run.epoch, epoch)
            self._epochs_done += step
            if not self.enabled:
                return
            acc = "" if val_accuracy is None else f"val acc {val_accuracy:.3f}"
            if run.bar is not None:
                if acc:
                    run.bar.set_postfix_str(acc, refresh=False)
                run.bar.update(step)
                if self._overall is not None:
                    self._overall.update(step)
                return
            observed_done = epoch == self.observed and self.observed < self.epochs
            if not observed_done and now - run.t_line < self.line_every_s:
                return
            run.t_line = now
            what = " (observed epochs done)" if observed_done else ""
            self.write(
                f"[{run.index}/{self.n_total}] {name}: epoch {epoch}/{self.epochs}{what}"
                f"{', ' + acc if acc else ''}, {duration(now - run.t_start)}, "
                f"ETA {duration(run.eta(self.epochs, now))}"
            )

    def finished(self, name: str, note: str) -> None:
        """The candidate is done (or failed); ``note`` says how. Adds the run's ETA."""
        now = time.perf_counter()
        with self._lock:
            run = self._running.pop(name, None)
            self._done.add(name)
            self._finished += 1
            if run is not None:
                left = max(0, self.epochs - run.epoch)
                self._epochs_done += left  # a failed candidate's epochs will not come
                if run.bar is not None:
                    run.bar.close()
                if self._overall is not None:
                    self._overall.update(left)
            index = run.index if run is not None else self._finished
            eta = self._run_eta(now)
            tail = f"; run ETA {duration(eta)}" if self._finished < self.n_total else ""
            self.write(f"[{index}/{self.n_total}] {note}{tail}")

    def _run_eta(self, now: float) -> float:
        total = self.n_jobs * self.epochs
        if self._t0 is None or self._epochs_done <= 0:
            return math.nan
        rate = self._epochs_done / (now - self._t0)
        return (total - self._epochs_done) / rate if rate > 0 else math.nan

    def close(self) -> None:
        with self._lock:
            for run in self._running.values():
                if run.bar is not None:
                    run.bar.close()
            if self._overall is not None:
                self._overall.close()
                self._overall = None

    def __enter__(self) -> RunProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
