"""Run candidates as independent jobs: in this process or on a Dask cluster; keep the run directory.

Each finished candidate (success or failure) is handed to ``on_done`` the
moment it finishes, which writes it to ``OUT/candidates/NAME.json``; a run
interrupted at any point keeps every candidate that finished, and
``resume`` skips them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import tempfile
import uuid
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from .candidates import CandidateSpec
from .data import Dataset
from .finetune import TrainSettings, failed_record, finetune_candidate
from .progress import Progress

Job = tuple[CandidateSpec, str]  # (candidate, record key)


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

    def load(self, name: str) -> dict[str, Any] | None:
        """A stored record, or None when absent or unreadable (a torn write is re-run)."""
        try:
            with open(self.path(name)) as f:
                rec = json.load(f)
        except (OSError, ValueError):
            return None
        return rec if isinstance(rec, dict) and rec.get("name") == name else None

    def save(self, record: dict[str, Any]) -> None:
        write_json(self.path(record["name"]), record)

    def clear(self) -> None:
        """Remove stored candidate records (a fresh, non-resumed run)."""
        if os.path.isdir(self.candidates_dir):
            for f in os.listdir(self.candidates_dir):
                if f.endswith(".json"):
                    os.remove(os.path.join(self.candidates_dir, f))


def _local_threads(workers: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // workers)


def run_in_process(
    jobs: Sequence[Job], data: Dataset, settings: TrainSettings,
    on_done: Callable[[dict[str, Any]], None], *, progress: bool = True,
) -> None:
    """Run the jobs one after another in this process (no Dask)."""
    for i, (spec, key) in enumerate(jobs):
        # Epoch bars on a terminal only: in a log, one line per candidate is enough.
        bar = Progress(settings.train_epochs, f"[{i + 1}/{len(jobs)}] {spec.name}",
                       enabled=progress and sys.stderr.isatty(), unit="epoch", leave=False)

        def on_epoch(epoch: int, logs: dict[str, Any], bar: Progress = bar) -> None:
            acc = logs.get("val_accuracy")
            bar.update(1, "" if acc is None else f"val acc {acc:.3f}")

        try:
            rec = finetune_candidate(spec, data, settings, key, on_epoch)
        finally:
            bar.close()
        on_done(rec)


def run_dask(
    jobs: Sequence[Job], data: Dataset, settings: TrainSettings,
    on_done: Callable[[dict[str, Any]], None], *, workers: int = 2,
    scheduler: str | None = None,
) -> None:
    """Run the jobs on Dask: a LocalCluster of ``workers`` processes, or ``scheduler``'s cluster.

    Each job is one task; a task that raises or whose worker dies (killed, out
    of memory) gives a failed record and the others go on.
    """
    import dask
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        if settings.threads == 0:  # share the cores: N workers must not each take them all
            settings = dataclasses.replace(settings, threads=_local_threads(workers))
        # A task that kills its worker (e.g. out of memory) fails at once, not after 3 retries.
        with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \
                warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Port .* is already in use")
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True,
                dashboard_address=None, silence_logs=logging.ERROR,
            )
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError, ValueError) as err:
            raise ValueError(f"scheduler: cannot connect to {scheduler!r}: {err}") from err
    try:
        data_f = client.scatter(data, broadcast=True, hash=False)
        token = uuid.uuid4().hex[:8]
        futures = {}
        for spec, key in jobs:
            fut = client.submit(finetune_candidate, spec, data_f, settings, key,
                                key=f"ncap-{spec.name}-{token}", pure=False)
            futures[fut] = (spec, key)
        for fut in as_completed(list(futures)):
            spec, key = futures[fut]
            try:
                rec = fut.result()
            except Exception as err:  # KilledWorker, a lost connection, unpicklable input
                rec = failed_record(spec, err, key=key, stage="dask")
            fut.release()
            on_done(rec)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
