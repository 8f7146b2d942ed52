"""Run candidates as independent jobs: in this process or on a Dask cluster.

Each finished candidate (success or failure) is handed to ``on_done`` the
moment it finishes (the pipeline writes it to the run directory, see
:mod:`.store`); a run interrupted at any point keeps every candidate that
finished, and ``resume`` skips them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import uuid
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from .candidates import CandidateSpec
from .dataset import Dataset
from .finetune import TrainSettings, failed_record, finetune_candidate
from .progress import Progress
from .record import CandidateRecord

Job = tuple[CandidateSpec, str]  # (candidate, record key)


def _local_threads(workers: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // workers)


def run_in_process(
    jobs: Sequence[Job],
    data: Dataset,
    settings: TrainSettings,
    on_done: Callable[[CandidateRecord], None],
    *,
    progress: bool = True,
) -> None:
    """Run the jobs one after another in this process (no Dask)."""
    for i, (spec, key) in enumerate(jobs):
        # Epoch bars on a terminal only: in a log, one line per candidate is enough.
        bar = Progress(
            settings.train_epochs,
            f"[{i + 1}/{len(jobs)}] {spec.name}",
            enabled=progress and sys.stderr.isatty(),
            unit="epoch",
            leave=False,
        )

        def on_epoch(epoch: int, logs: dict[str, Any], bar: Progress = bar) -> None:
            acc = logs.get("val_accuracy")
            bar.update(1, "" if acc is None else f"val acc {acc:.3f}")

        try:
            rec = finetune_candidate(spec, data, settings, key, on_epoch)
        finally:
            bar.close()
        on_done(rec)


def run_dask(
    jobs: Sequence[Job],
    data: Dataset,
    settings: TrainSettings,
    on_done: Callable[[CandidateRecord], None],
    *,
    workers: int = 2,
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
        with (
            dask.config.set({"distributed.scheduler.allowed-failures": 0}),
            warnings.catch_warnings(),
        ):
            warnings.filterwarnings("ignore", message="Port .* is already in use")
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                silence_logs=logging.ERROR,
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
            fut = client.submit(
                finetune_candidate,
                spec,
                data_f,
                settings,
                key,
                key=f"ncap-{spec.name}-{token}",
                pure=False,
            )
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
