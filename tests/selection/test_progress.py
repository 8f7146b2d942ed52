"""Progress that names what runs: the header, plain lines in a log, tqdm bars on a terminal,
and events from Dask workers."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from support.tiny_backbones import tiny_cnn

from ncap.selection.progress import RunProgress, duration, epoch_event, start_event


def _feed(progress, names, epochs):
    for name in names:
        progress.handle(start_event(name))
        for e in range(epochs):
            progress.handle(epoch_event(name, e, {"val_accuracy": 0.5 + e / 1000}))
        progress.finished(name, f"{name} done")
    progress.close()


def test_plain_lines_in_a_log_name_the_candidate_and_stay_few():
    """50 epochs of 2 candidates: a start, an observed-epochs and a done line each."""
    out = io.StringIO()
    p = RunProgress(2, 50, 10, stream=out, line_every_s=3600)
    assert not p.interactive  # a StringIO is no terminal
    _feed(p, ["cnn-wide", "mlp-tanh"], 50)
    lines = out.getvalue().splitlines()
    assert len(lines) == 6
    assert lines[0] == "[1/2] cnn-wide: started (50 epochs to train)"
    assert lines[1].startswith("[1/2] cnn-wide: epoch 10/50 (observed epochs done), val acc 0.509")
    assert "ETA" in lines[1]
    assert lines[2].startswith("[1/2] cnn-wide done; run ETA")
    assert lines[3].startswith("[2/2] mlp-tanh: started")
    assert lines[5] == "[2/2] mlp-tanh done"


def test_plain_lines_every_interval():
    out = io.StringIO()
    p = RunProgress(1, 5, 5, stream=out, line_every_s=0.0)
    _feed(p, ["a"], 5)
    epochs = [ln for ln in out.getvalue().splitlines() if ": epoch " in ln]
    assert [ln.split(": epoch ")[1][:3] for ln in epochs] == ["1/5", "2/5", "3/5", "4/5", "5/5"]


def test_bars_on_a_terminal_name_the_candidate_with_an_eta():
    out = io.StringIO()
    p = RunProgress(2, 4, 2, n_total=3, stream=out, interactive=True)
    _feed(p, ["cnn-wide", "mlp-tanh"], 4)
    text = out.getvalue()
    assert "all 2 candidates" in text  # the run's bar, in epochs
    assert "[2/3] cnn-wide" in text and "[3/3] mlp-tanh" in text  # one reused: 1/3 done
    assert "4/4" in text and "val acc 0.503" in text
    assert "<" in text and "epoch/s" in text  # tqdm's elapsed<remaining and rate
    assert "[2/3] cnn-wide done" in text


def test_disabled_prints_nothing_and_late_events_are_ignored():
    out = io.StringIO()
    p = RunProgress(1, 3, 2, stream=out, enabled=False)
    _feed(p, ["a"], 3)
    assert out.getvalue() == ""
    out = io.StringIO()
    p = RunProgress(1, 3, 2, stream=out, line_every_s=0.0)
    _feed(p, ["a"], 3)
    before = out.getvalue()
    p.handle(epoch_event("a", 2, {}))  # a Dask event that arrives after the result
    assert out.getvalue() == before


@pytest.mark.parametrize(
    "seconds, text", [(4.4, "4 s"), (125, "2 min 05 s"), (3720, "1 h 02 min"), (-1, "?")]
)
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_header_says_what_runs(tmp_path):
    """Candidates with their weights and adaptations, epochs, data sizes, where, cache."""
    from ncap.selection.example import target_dataset
    from ncap.selection.header import run_header
    from ncap.selection.pipeline import plan
    from ncap.selection.settings import RunSettings

    data = target_dataset(n_train_per_class=8, n_val_per_class=6)
    settings = RunSettings.from_arguments(data=data, epochs=5, truth_epochs=20, workers=2)
    p = plan(
        ["MobileNetV2", "example:cnn-wide", tiny_cnn],
        data,
        settings,
        out=str(tmp_path),
        resume=False,
    )
    text = "\n".join(run_header(p))
    assert text.startswith("ncap select: 3 candidates\n")
    assert "40 train, 30 val" in text and "samples of 8x8x1, 5 classes" in text
    assert "every predictor reads epochs 1-5; training goes on to epoch 20" in text
    assert "on 2 Dask worker processes" in text
    assert f"out: {tmp_path}" in text
    assert "cache: example backbones pre-trained once into" in text
    assert "keras.applications.MobileNetV2, random initialisation" in text
    for step in (
        "images resized 8x8 -> 32x32 (bilinear)",
        "grey -> 3 channels",
        "pixels 0..1 scaled by 255 to 0..255",
        "preprocess_input (mobilenet_v2) maps 0..255 to -1.00..1.00",
    ):
        assert step in text
    assert re.search(r"\n  tiny_cnn +callable support\.tiny_backbones\.tiny_cnn", text)


def test_progress_from_dask_workers(capsys):
    """Epoch events travel from a Dask worker (log_event) to the driver's lines."""
    from distributed import LocalCluster

    import ncap
    from ncap.selection.example import target_dataset

    data = target_dataset(n_train_per_class=8, n_val_per_class=6)
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        report = ncap.select(
            {"cnn": tiny_cnn},
            data,
            epochs=3,
            k=2,
            batch_size=16,
            hidden=(8, 8, 8),
            scheduler=cluster.scheduler_address,
            plots=False,
        )
    err = capsys.readouterr().err
    assert report.candidates[0].ok
    assert "[1/1] cnn: started (3 epochs to train)" in err
    assert "[1/1] cnn: epoch 3/3" not in err or "val acc" in err
    assert "[1/1] cnn done in" in err
    acc = np.asarray(report.candidates[0].curve("val_accuracy"))
    assert len(acc) == 3
