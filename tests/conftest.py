"""Shared test settings: quiet TensorFlow, one BLAS thread (tests share 2 cores).

Slow, long-fuzz and GPU cases are left out of a plain ``pytest`` run, but not
out of a file named on the command line: ``pytest tests/arrays/test_gpu.py``
runs that file's GPU tests. ``-m slow`` (any ``-m``) or ``--run-slow`` /
``--run-fuzz-long`` / ``--run-gpu`` opt in explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

OPT_IN = ("slow", "fuzz_long", "gpu")


def pytest_addoption(parser: pytest.Parser) -> None:
    for mark in OPT_IN:
        parser.addoption(
            f"--run-{mark.replace('_', '-')}",
            action="store_true",
            help=f"also run the tests marked {mark}",
        )


def _named_files(config: pytest.Config) -> set[Path]:
    files = set()
    for arg in config.args:
        path = Path(str(arg).split("::")[0]).resolve()
        if path.is_file():
            files.add(path)
    return files


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.option.markexpr:
        return  # the user chose with -m
    wanted = {m for m in OPT_IN if config.getoption(f"--run-{m.replace('_', '-')}")}
    named = _named_files(config)
    keep, drop = [], []
    for item in items:
        gated = {m for m in OPT_IN if item.get_closest_marker(m)} - wanted
        if gated and Path(str(item.path)).resolve() not in named:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
