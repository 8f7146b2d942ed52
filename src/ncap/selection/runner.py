"""Run candidates as independent jobs: in this process or on Dask worker processes.

Each finished candidate (success or failure) is handed to ``on_done`` the
moment it finishes (the pipeline writes it to the run directory, see
:mod:`.store`); a run interrupted at any point keeps every candidate that
finished, and ``resume`` skips them.

:func:`open_runner` picks where candidates run: in this process (``workers=1``,
no ``scheduler``, no ``candidate_timeout``) or on Dask (a LocalCluster, or an
existing scheduler), connecting first (see :mod:`.cluster`). On Dask:

* a candidate that fails before it started (its worker died while it was only
  queued there, or the data went with that worker) is submitted again, up to
  :data:`MAX_REQUEUES` times; "started" is the event its task sends first;
* one whose worker dies while it runs fails (``KilledWorker``), or is run again
  ``retries`` times;
* one still running ``candidate_timeout`` seconds after it started is cancelled,
  its worker restarted, and its record says it timed out; the run goes on.

A time limit needs a process that can be stopped, so ``candidate_timeout`` with
``workers=1`` runs candidates on a one-worker LocalCluster.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

from .candidates import CandidateSpec
from .dataset import Dataset
from .finetune import TrainSettings, failed_record, finetune_candidate
from .progress import EVENT_TOPIC, epoch_event, start_event
from .record import TIMEOUT_STAGE, CandidateRecord
from .settings import RunSettings

Job = tuple[CandidateSpec, str]  # (candidate, record key)
OnDone = Callable[[CandidateRecord], None]
OnNote = Callable[[str], None]  # something the user should know (also kept in the report)
OnEvent = Callable[[dict[str, Any]], None]  # progress events, see .progress

#: Times a candidate that failed before it started is submitted again.
MAX_REQUEUES = 3
#: Seconds between looks at the running candidates (finished? over time?).
POLL_S = 0.2


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: ``saved`` of ``total`` candidates are stored in ``out`` (or None)."""

    def __init__(self, saved: int, total: int, out: str | None) -> None:
        super().__init__(f"interrupted: {saved} of {total} candidates saved")
        self.saved, self.total, self.out = saved, total, out


class CandidateExit(RuntimeError):
    """A candidate run in this process called ``os._exit``, which would end the whole run."""


class Runner(Protocol):
    def run(
        self,
        jobs: Sequence[Job],
        data: Dataset,
        settings: TrainSettings,
        on_done: OnDone,
        on_note: OnNote,
        on_event: OnEvent,
    ) -> None: ...


def uses_worker_processes(settings: RunSettings) -> bool:
    """Candidates run on Dask (worker processes), not in this process."""
    return (
        settings.scheduler is not None
        or settings.workers > 1
        or settings.candidate_timeout is not None
    )


def preflight(settings: RunSettings) -> None:
    """What can fail before any data is read: the ``__main__`` guard, the scheduler's address.

    Cheap (no TensorFlow), so a wrong ``scheduler`` fails in a second, not after the
    data and candidates were loaded; :func:`open_runner` checks again when it connects.
    """
    if not uses_worker_processes(settings):
        return
    from .cluster import probe_scheduler, refuse_unguarded_script

    refuse_unguarded_script()
    if settings.scheduler is not None:
        probe_scheduler(settings.scheduler)


@contextlib.contextmanager
def open_runner(settings: RunSettings) -> Iterator[Runner]:
    """Where the candidates run; a Dask cluster is reached (or started) first, with deadlines."""
    if not uses_worker_processes(settings):
        yield InProcessRunner()
        return
    from .cluster import connect_scheduler, local_cluster

    if settings.scheduler is not None:
        client = connect_scheduler(settings.scheduler)
        try:
            yield DaskRunner(client, settings)
        finally:
            client.close()
    else:
        with local_cluster(settings.workers) as client:
            yield DaskRunner(client, settings)


# --- in this process -------------------------------------------------------------


@contextlib.contextmanager
def _process_exit_refused() -> Iterator[None]:
    """While a candidate runs here, ``os._exit`` raises :class:`CandidateExit` instead.

    ``os._exit`` skips every ``finally`` and ``atexit``: nothing could report it
    afterwards. Code that bound ``os._exit`` before (``from os import _exit``), a
    signal, or a crash in C still ends the process; candidates that may do so
    belong in worker processes (``workers=2`` or ``candidate_timeout``).
    """
    real = os._exit

    def refuse(status: int) -> None:
        raise CandidateExit(
            f"the candidate called os._exit({status}), which would have ended the whole run "
            "(run such candidates in worker processes: workers=2 or candidate_timeout)"
        )

    os._exit = refuse  # type: ignore[assignment]
    try:
        yield
    finally:
        os._exit = real


@contextlib.contextmanager
def _interrupt_noticed() -> Iterator[Callable[[], bool]]:
    """Yields ``interrupted()``: whether Ctrl-C (SIGINT) arrived while the block ran.

    Python turns SIGINT into a ``KeyboardInterrupt`` wherever the main thread is, and
    library code with a bare ``except:`` may turn that into an ordinary error
    (TensorFlow's ``DType.max``, which Keras' Dropout calls, raises "TypeError: Cannot
    find maximum value"); the candidate would then be recorded as failed and the run go
    on. The handler still raises ``KeyboardInterrupt`` as Python's does, and also
    remembers the signal. Only Python's own handler is replaced, in the main thread.
    """
    seen = threading.Event()
    mine = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    if not mine:
        yield seen.is_set
        return

    def handler(signum: int, frame: Any) -> None:
        seen.set()
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGINT, handler)
    try:
        yield seen.is_set
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


class InProcessRunner:
    """The candidates one after another in this process (no Dask)."""

    def run(
        self,
        jobs: Sequence[Job],
        data: Dataset,
        settings: TrainSettings,
        on_done: OnDone,
        on_note: OnNote,
        on_event: OnEvent,
    ) -> None:
        for spec, key in jobs:
            on_event(start_event(spec.name))

            def on_epoch(epoch: int, logs: dict[str, Any], name: str = spec.name) -> None:
                on_event(epoch_event(name, epoch, logs))

            with _process_exit_refused(), _interrupt_noticed() as interrupted:
                rec = finetune_candidate(spec, data, settings, key, on_epoch)
            if interrupted():  # even where the candidate's code swallowed the interrupt
                raise KeyboardInterrupt
            on_done(rec)


# --- on Dask ---------------------------------------------------------------------


def run_candidate_on_worker(
    spec: CandidateSpec, data: Dataset, settings: TrainSettings, record_key: str, topic: str
) -> CandidateRecord:
    """The Dask task: train, sending progress events to ``topic`` (see :mod:`.progress`).

    The start event also names the task and the worker: time limits count from
    it, and a task whose worker died before it was sent had not started.
    """
    from distributed import get_worker

    from .tf_quiet import quiet_tensorflow

    quiet_tensorflow()  # this worker process's TensorFlow start-up, as the driver decided
    worker = get_worker()
    start = {**start_event(spec.name), "task": worker.get_current_task(), "worker": worker.address}
    worker.log_event(topic, start)

    def on_epoch(epoch: int, logs: dict[str, Any]) -> None:
        worker.log_event(topic, epoch_event(spec.name, epoch, logs))

    return finetune_candidate(spec, data, settings, record_key, on_epoch)


@dataclasses.dataclass
class _Attempt:
    """One candidate on Dask: how often it was submitted again, and why."""

    spec: CandidateSpec
    key: str
    submitted: int = 0
    requeues: int = 0  # its worker died before it started
    retries: int = 0  # its worker died while it ran


class DaskRunner:
    """The candidates as Dask tasks; each finished one is handed to ``on_done`` at once."""

    def __init__(self, client: Any, settings: RunSettings) -> None:
        self.client = client
        self.timeout = settings.candidate_timeout
        self.retries = settings.retries
        self.token = uuid.uuid4().hex[:8]

    def run(
        self,
        jobs: Sequence[Job],
        data: Dataset,
        settings: TrainSettings,
        on_done: OnDone,
        on_note: OnNote,
        on_event: OnEvent,
    ) -> None:
        client = self.client
        topic = f"{EVENT_TOPIC}-{self.token}"
        # task key -> (driver's clock when it started, its worker); written from Dask's
        # event thread, read here (single dict operations are atomic).
        started: dict[str, tuple[float, str]] = {}

        def on_worker_event(event: tuple[float, dict[str, Any]]) -> None:
            msg = event[1]
            if "task" in msg:
                started.setdefault(msg["task"], (time.monotonic(), msg["worker"]))
            on_event(msg)

        client.subscribe_topic(topic, on_worker_event)
        live: dict[Any, _Attempt] = {}
        data_f = client.scatter(data, broadcast=True, hash=False)

        def submit(att: _Attempt) -> None:
            nonlocal data_f
            if data_f.status != "finished":  # its last holder died (a restarted lone worker)
                data_f = client.scatter(data, broadcast=True, hash=False)
            att.submitted += 1
            task = f"ncap-{att.spec.name}-{self.token}-{att.submitted}"
            try:
                fut = client.submit(
                    run_candidate_on_worker,
                    att.spec,
                    data_f,
                    settings,
                    att.key,
                    topic,
                    key=task,
                    pure=False,
                )
            except Exception as err:  # e.g. a candidate that cannot be pickled
                on_done(failed_record(att.spec, err, key=att.key, stage="dask"))
                return
            live[fut] = att

        try:
            for spec, key in jobs:
                submit(_Attempt(spec, key))
            while live:
                for fut in [f for f in live if f.status != "pending"]:
                    att = live.pop(fut)
                    rec = self._outcome(fut, att, started.get(fut.key), on_note)
                    fut.release()
                    if rec is None:
                        submit(att)
                    else:
                        on_done(rec)
                if self.timeout is not None:
                    self._stop_overdue(live, started, on_done, on_note)
                if live:
                    time.sleep(POLL_S)
        finally:
            if live:  # interrupted: do not leave candidates running on the cluster
                client.cancel(list(live), force=True)
            client.unsubscribe_topic(topic)

    def _outcome(
        self,
        fut: Any,
        att: _Attempt,
        start: tuple[float, str] | None,
        on_note: OnNote,
    ) -> CandidateRecord | None:
        """The finished task's record, or None to submit it again."""
        from distributed import KilledWorker

        if fut.status == "finished":
            try:
                return fut.result()
            except Exception as err:  # the result could not be fetched or unpickled
                return failed_record(att.spec, err, key=att.key, stage="dask")
        try:
            err = fut.exception()
        except Exception as e:  # cancelled: the scheduler dropped it (e.g. the client was lost)
            err = e
        name = att.spec.name
        if start is None and att.requeues < MAX_REQUEUES:
            # Nothing of it ran: its worker died while it was queued there, or the data
            # it needs went with a worker. It is submitted again.
            att.requeues += 1
            why = (
                f"a worker died while {name} was queued on it"
                if isinstance(err, KilledWorker)
                else f"{name} did not start ({type(err).__name__})"
            )
            on_note(f"{name}: {why}; submitted again")
            return None
        if isinstance(err, KilledWorker):
            if start is not None and att.retries < self.retries:
                att.retries += 1
                on_note(
                    f"{name}: its worker died while it ran; run again "
                    f"(retry {att.retries} of {self.retries})"
                )
                return None
            where = "" if start is None else f" ({start[1]})"
            return CandidateRecord.failed(
                name,
                att.spec.describe(),
                "KilledWorker: the worker process running this candidate died"
                f"{where}: killed from outside, out of memory, a crash, or the candidate "
                "ended its own process",
                key=att.key,
                stage="dask",
                tb="".join(traceback.format_exception(type(err), err, err.__traceback__)),
            )
        return failed_record(att.spec, err or "the task failed", key=att.key, stage="dask")

    def _stop_overdue(
        self,
        live: dict[Any, _Attempt],
        started: dict[str, tuple[float, str]],
        on_done: OnDone,
        on_note: OnNote,
    ) -> None:
        """Cancel candidates past their time limit and restart the workers running them."""
        assert self.timeout is not None
        now = time.monotonic()
        overdue = [
            (fut, started[fut.key])
            for fut in live
            if fut.key in started and now - started[fut.key][0] > self.timeout
        ]
        for fut, (t0, worker) in overdue:
            att = live.pop(fut)
            self.client.cancel([fut], force=True)
            # A running task cannot be stopped inside its thread: its process is restarted
            # (by its nanny; a worker without one is closed).
            self.client.restart_workers([worker], raise_for_error=False)
            on_note(f"{att.spec.name}: stopped after {self.timeout:g} s (candidate_timeout)")
            on_done(
                CandidateRecord.failed(
                    att.spec.name,
                    att.spec.describe(),
                    f"timed out: still running {self.timeout:g} s after it started "
                    f"(candidate_timeout={self.timeout:g})",
                    key=att.key,
                    stage=TIMEOUT_STAGE,
                    timing={"total_s": now - t0},
                )
            )
