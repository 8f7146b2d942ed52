"""Same settings, same report: whatever the worker count, the beta protocol or a rerun.

Real TensorFlow runs of tiny backbones on real digits; ``ncap select`` as a user
runs it (a fresh process, in-process training or a Dask LocalCluster).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from support.tiny_backbones import tiny_cnn, tiny_mlp

from ncap.selection.example import target_dataset

TINY = dict(epochs=4, truth_epochs=5, k=3, batch_size=16, hidden=(16, 16, 16), progress=False)
# What may differ between two runs of the same command: where and how long they ran.
RUN_SPECIFIC = {"elapsed_s", "files", "timing", "workers", "scheduler", "resumed", "out"}


@pytest.fixture(scope="module")
def tiny_data():
    return target_dataset(n_train_per_class=12, n_val_per_class=8)


def _without_run_specifics(doc):
    if isinstance(doc, dict):
        return {k: _without_run_specifics(v) for k, v in doc.items() if k not in RUN_SPECIFIC}
    if isinstance(doc, list):
        return [_without_run_specifics(v) for v in doc]
    return doc


def _cli(tmp_path, name: str, *extra: str) -> dict:
    """`ncap select` in a fresh Python process on the tiny pool; its report.json."""
    data = tmp_path / "tiny.npz"
    if not data.exists():
        d = target_dataset(n_train_per_class=12, n_val_per_class=8)
        np.savez(data, **{k: getattr(d, k) for k in ("x_train", "y_train", "x_val", "y_val")},
                 x_test=d.x_test, y_test=d.y_test)  # fmt: skip
    tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, *sys.path])}
    out = tmp_path / name
    argv = [
        sys.executable, "-m", "ncap", "select",
        "support.tiny_backbones:tiny_cnn", "support.tiny_backbones:tiny_mlp",
        "--data", str(data), "--epochs", "4", "--truth-epochs", "5", "-k", "3",
        "--batch-size", "16", "--hidden", "16,16,16", "--out", str(out), "-q", "--no-plots",
        *extra,
    ]  # fmt: skip
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_report_does_not_depend_on_the_worker_count(tmp_path):
    """In-process and on a two-worker LocalCluster: the same report, timings aside.

    The TensorFlow thread count is a run setting (default 1), not cores / workers,
    and op determinism is on, so every float comes out the same.
    """
    alone = _cli(tmp_path, "in-process")
    dask = _cli(tmp_path, "two-workers", "--workers", "2")
    assert alone["settings"]["threads"] == dask["settings"]["threads"] == 1
    assert dask["settings"]["workers"] == 2
    assert [c["tf_threads"] for c in alone["candidates"]] == [1, 1]
    assert [c["tf_threads"] for c in dask["candidates"]] == [1, 1]
    assert all(c["status"] == "ok" for c in alone["candidates"] + dask["candidates"])
    assert _without_run_specifics(alone) == _without_run_specifics(dask)


def _select(data, beta="step", cands=("cnn", "mlp"), **kw):
    import ncap

    pool = {"cnn": tiny_cnn, "mlp": tiny_mlp}
    return ncap.select({n: pool[n] for n in cands}, data, beta=beta, **{**TINY, **kw})


@pytest.fixture(scope="module")
def runs(tiny_data):
    """The tiny pool under the settings the tests compare (each trained once)."""
    return {
        "step": _select(tiny_data),
        "seed1": _select(tiny_data, seed=1),
        "both": _select(tiny_data, beta="both"),
        "epoch": _select(tiny_data, beta="epoch", cands=("mlp",)),
        "two_seeds": _select(tiny_data, truth_seeds=2),
    }


def _by_name(report):
    return {c.name: c for c in report.candidates}


def test_same_settings_same_records(tiny_data, runs):
    """A rerun in the same process with the same seed gives identical curves and truths."""
    again = _select(tiny_data, cands=("cnn",)).candidates[0].record
    first = _by_name(runs["step"])["cnn"].record
    assert first.ok and again.ok
    assert again.beta == first.beta and again.val_accuracy == first.val_accuracy
    assert again.truth == first.truth
    assert _by_name(runs["seed1"])["cnn"].record.val_loss != first.val_loss  # seeds matter


def test_epoch_protocol_leaves_training_unchanged(runs):
    """beta="epoch"/"both" add a pass over the training data per epoch; training is the same."""
    step, both = _by_name(runs["step"])["mlp"], _by_name(runs["both"])["mlp"]
    epoch = _by_name(runs["epoch"])["mlp"]
    for c in (step, both, epoch):
        assert c.ok, c.error
    for key in ("val_accuracy", "val_loss", "train_loss", "train_accuracy"):
        assert getattr(both.record, key) == getattr(step.record, key), key
        assert getattr(epoch.record, key) == getattr(step.record, key), key
    assert both.truth == step.truth == epoch.truth
    # "both" keeps the step curve as beta and the pass's curve beside it; "epoch" only the pass.
    assert both.record.beta == step.record.beta
    assert both.record.beta_epoch == epoch.record.beta and step.record.beta_epoch == []
    assert both.record.beta_epoch != both.record.beta
    assert len(both.record.beta_epoch) == TINY["truth_epochs"]
    assert both.record.timing["epoch_pass_s"] > 0
    assert "epoch_pass_s" not in step.record.timing


def test_both_protocols_give_two_predictors(runs):
    """beta="both": ncap on each curve, side by side in the table and in report.json."""
    rep = runs["both"]
    assert rep.methods[:2] == ("ncap", "ncap_epoch")
    doc = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    assert doc["settings"]["beta"] == "both"
    assert set(doc["picks"]) == set(rep.methods)
    for c in rep.candidates:
        pe = c.scores.predictions["ncap_epoch"]
        assert np.allclose(pe.window_beta, c.record.beta_epoch[pe.t0 : pe.t0 + pe.k])
        assert c.scores.values["ncap_epoch"] == pe.predicted
    assert doc["methods"]["ncap_epoch"]["metrics"] is not None
    assert doc["methods"]["ncap_epoch"]["accuracy"]["n"] == 2
    assert "ncap (epoch beta)" in rep.table()


def test_truth_seeds_give_the_mean_truth_and_the_ceiling(tiny_data, runs):
    """truth_seeds=2: each seed's truth is that of a run with that seed; judged on the mean."""
    two = runs["two_seeds"]
    seed0, seed1 = _by_name(runs["step"]), _by_name(runs["seed1"])
    for c in two.candidates:
        assert c.record.seed_truths == [seed0[c.name].truth, seed1[c.name].truth]
        assert c.truth == pytest.approx((seed0[c.name].truth + seed1[c.name].truth) / 2)
        assert c.record.truth == seed0[c.name].truth  # the observed run is the first seed
        assert c.record.val_accuracy == seed0[c.name].record.val_accuracy
    assert two.ceiling is not None and len(two.ceiling["pairs"]) == 1
    assert "seed-noise ceiling" in two.table()
    assert two.settings["truth_seeds"] == 2
    with pytest.raises(ValueError, match="truth_seeds=2 needs evaluation mode"):
        _select(tiny_data, truth_seeds=2, truth_epochs=None)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["select", "--beta", "sometimes"], "invalid choice: 'sometimes'"),
        (["select", "--truth-seeds", "0"], "truth seeds must be >= 1"),
        (["select", "--threads", "0"], "threads must be >= 1"),
    ],
)
def test_cli_refuses_bad_protocol_seed_and_thread_arguments(argv, words, capsys):
    from ncap.selection.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and words in capsys.readouterr().err


@pytest.mark.parametrize(
    "kw, exc, words",
    [
        ({"beta": "steps"}, ValueError, "beta must be one of step, epoch, both"),
        ({"truth_seeds": 0}, ValueError, "truth_seeds must be >= 1"),
        ({"truth_seeds": 2.0}, TypeError, "truth_seeds must be an int"),
        ({"threads": 0}, ValueError, "threads must be >= 1"),
    ],
)
def test_select_refuses_bad_protocol_seed_and_thread_arguments(kw, exc, words, tiny_data):
    with pytest.raises(exc, match=words):
        _select(tiny_data, **kw)


def test_op_determinism_is_on_while_training_and_put_back(tiny_data):
    """On while a candidate trains; off again afterwards (Keras turns XLA off under it)."""
    from tensorflow.python.framework import config as tf_config

    import ncap

    seen = []

    def recording_mlp():
        seen.append(tf_config.is_op_determinism_enabled())
        return tiny_mlp()

    tf_config.disable_op_determinism()
    rep = ncap.select({"rec": recording_mlp}, tiny_data, **{**TINY, "truth_epochs": None})
    assert rep.candidates[0].ok and seen == [True]
    assert not tf_config.is_op_determinism_enabled()


def test_thread_count_is_a_setting_not_the_worker_count():
    """The default is one thread, with one worker or four."""
    from ncap.selection.settings import DEFAULT_THREADS, RunSettings

    for workers in (1, 4):
        s = RunSettings.from_arguments(workers=workers)
        assert s.threads == DEFAULT_THREADS == 1 and s.train_settings().threads == 1
    assert RunSettings.from_arguments(workers=4, threads=3).train_settings().threads == 3


def test_other_threads_drawing_from_pythons_random_change_nothing(tiny_data, runs):
    """A Dask worker's event loop draws from Python's global ``random`` (connection
    retries back off by ``random.uniform``) while a candidate is built in another
    thread. The candidate's initial weights must not depend on those draws: the
    records equal those of a run nobody disturbed."""
    import random
    import threading

    stop = threading.Event()
    draws = [0]

    def draw() -> None:
        while not stop.wait(0.0002):  # sporadic, like an event loop, not a busy loop
            random.random()
            draws[0] += 1

    t = threading.Thread(target=draw, daemon=True)
    t.start()
    try:
        disturbed = _select(tiny_data, cands=("cnn", "mlp"))
    finally:
        stop.set()
        t.join(timeout=10)
    assert draws[0] > 100  # the other thread did draw while the candidates were built
    calm = _by_name(runs["step"])
    for c in disturbed.candidates:
        assert c.ok, c.error
        assert c.record.val_accuracy == calm[c.name].record.val_accuracy, c.name
        assert c.record.beta == calm[c.name].record.beta, c.name


def test_seeded_gives_keras_back_the_shared_generator_even_after_an_error():
    import random

    from keras.src.random import seed_generator

    from ncap.selection.seeding import seeded

    with pytest.raises(RuntimeError, match="inside"):
        with seeded(3) as reseed:
            assert seed_generator.python_random is not random  # a private generator
            first = seed_generator.make_default_seed()
            reseed()
            assert seed_generator.make_default_seed() == first  # seeded again, same draw
            raise RuntimeError("inside")
    assert seed_generator.python_random is random
