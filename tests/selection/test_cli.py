"""The `ncap` command: help, argument errors with clear messages, a tiny real run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ncap.selection.cli import main


def _run(argv, capsys):
    """main(argv) -> (exit status, stdout, stderr); argparse errors exit via SystemExit."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def test_help(capsys):
    from ncap.selection.example import POOL

    code, out, _ = _run(["--help"], capsys)
    assert code == 0 and "select" in out
    code, out, _ = _run(["select", "--help"], capsys)
    assert code == 0
    for opt in (
        "--data",
        "--epochs",
        "--truth-epochs",
        "--out",
        "--workers",
        "--scheduler",
        "--resume",
        "--weights",
        "--tf-log",
        "example:NAME",
        "mymodule:build",
    ):
        assert opt in out
    flat = " ".join(out.split())
    for b in POOL:  # the built-in example's candidate names
        assert f"example:{b.name}" in flat
    assert "RANDOMLY INITIALISED unless --weights imagenet" in flat
    assert "default: random initialisation" in flat
    assert "random seed of fine-tuning" in flat  # --seed says what it seeds
    assert (
        "exit status: 0 all candidates ran, 1 some failed, 2 usage error, 130 interrupted" in flat
    )
    assert "train/, val/ (or validation/) and optional test/" in flat  # image-folder layout
    assert "report.csv" in flat and "docs/REPORT.md" in flat


def test_python_dash_m_ncap():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    r = subprocess.run(
        [sys.executable, "-m", "ncap", "select", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0 and "--truth-epochs" in r.stdout


def test_no_command(capsys):
    code, _, err = _run([], capsys)
    assert code == 2 and "choose a command" in err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["select", "--epochs", "1"], "epochs must be >= 2"),
        (["select", "--epochs", "five"], "epochs must be an integer"),
        (["select", "--learning-rate", "-0.1"], "learning rate must be positive"),
        (["select", "--hidden", "64,32"], "at least three hidden layers"),
        (["select", "--dropout", "1.5"], "dropout must be in [0, 1)"),
        (["select", "--workers", "0"], "workers must be >= 1"),
        (["select", "--image-size", "0,5"], "image size must be H or H,W"),
        (["select", "--frobnicate"], "unrecognized arguments"),
        (["select", "a.keras", "--data", "no/such/target.npz"], "--data: no such file"),
        (["select", "--data", "."], "name the CANDIDATE backbones"),
        (["select", "--out", "no/such/run", "--resume"], "--resume: no run directory"),
    ],
)
def test_argument_errors(argv, words, capsys):
    code, out, err = _run(argv, capsys)
    assert code == 2 and words in err and out == ""


def test_errors_from_select_are_clear(tmp_path, capsys):
    code, _, err = _run(["select", "NoSuchNet", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and err.startswith("ncap select: error: candidates: 'NoSuchNet'")
    code, _, err = _run(
        ["select", "example:cnn-wide", "--epochs", "3", "-k", "4", "--out", str(tmp_path / "r")],
        capsys,
    )
    assert code == 2 and "k=4 needs at least 4 observed epochs" in err
    code, _, err = _run(["select", "missing.keras", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "no such model file 'missing.keras'" in err


def _tiny_model(path, width, activation):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = keras.layers.Dense(width, activation=activation)(keras.layers.Flatten()(inp))
    keras.Model(inp, h).save(path)


def test_tiny_run_from_npz_and_saved_models(tmp_path, capsys, monkeypatch):
    from ncap.selection.example import target_dataset

    d = target_dataset(n_train_per_class=10, n_val_per_class=6)
    npz = tmp_path / "target.npz"
    np.savez(
        npz,
        x_train=d.x_train,
        y_train=d.y_train,
        x_val=d.x_val,
        y_val=d.y_val,
        x_test=d.x_test[:100],
        y_test=d.y_test[:100],
    )
    _tiny_model(tmp_path / "relu.keras", 16, "relu")
    _tiny_model(tmp_path / "tanh.keras", 8, "tanh")
    monkeypatch.chdir(tmp_path)
    argv = [
        "select",
        "relu.keras",
        "tanh.keras",
        "--data",
        "target.npz",
        "--epochs",
        "3",
        "-k",
        "3",
        "--truth-epochs",
        "4",
        "--batch-size",
        "16",
        "--hidden",
        "16,16,16",
        "--no-plots",
    ]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    assert "relu" in out and "tanh" in out and "spearman" in out
    (run,) = os.listdir(tmp_path / "ncap-runs")
    doc = json.loads((tmp_path / "ncap-runs" / run / "report.json").read_text())
    assert {c["name"] for c in doc["candidates"]} == {"relu", "tanh"}
    assert doc["settings"]["batch_size"] == 16 and doc["data"]["n_test"] == 100
    assert not os.path.exists(tmp_path / "ncap-runs" / run / "plots")
    assert f"ncap-runs/{run}/report.json" in out
    # --resume without --out picks the latest run and retrains nothing.
    code, out, err = _run(argv + ["--resume"], capsys)
    assert code == 0, err
    assert "resumed: 2 finished candidate(s)" in out
    assert len(os.listdir(tmp_path / "ncap-runs")) == 1


def test_some_failed_exits_1_and_quiet_prints_only_the_summary(tmp_path, capsys, monkeypatch):
    """One candidate fails (its input cannot be adapted): exit 1; --quiet prints the ranking
    and the picks on stdout and nothing on stderr."""
    import keras

    from ncap.selection.example import target_dataset

    d = target_dataset(n_train_per_class=8, n_val_per_class=6)
    np.savez(tmp_path / "t.npz", x_train=d.x_train, y_train=d.y_train, x_val=d.x_val, y_val=d.y_val)
    _tiny_model(tmp_path / "good.keras", 8, "relu")
    inp = keras.Input((5,))
    keras.Model(inp, keras.layers.Dense(3)(inp)).save(tmp_path / "vector.keras")
    monkeypatch.chdir(tmp_path)
    argv = ["select", "good.keras", "vector.keras", "--data", "t.npz", "--epochs", "2", "-k", "2"]
    argv += ["--batch-size", "16", "--hidden", "8,8,8", "--no-plots", "-q"]
    code, out, err = _run(argv, capsys)
    assert code == 1
    assert err == ""
    lines = out.splitlines()
    assert lines[0].startswith("best: good (ncap predicts ")
    assert lines[1].startswith("ranking: 1. good ")
    assert lines[2].startswith("picks: ncap (beta_eff) good;")
    assert "failed: vector" in lines
    assert "spearman" not in out and "rank  candidate" not in out
    (run,) = os.listdir(tmp_path / "ncap-runs")
    doc = json.loads((tmp_path / "ncap-runs" / run / "report.json").read_text())
    bad = [c for c in doc["candidates"] if c["name"] == "vector"][0]
    assert bad["status"] == "failed" and "cannot be adapted" in bad["error"]["message"]
    assert (tmp_path / "ncap-runs" / run / "report.csv").read_text().count("\n") == 3


@pytest.mark.parametrize(
    "env, asked",
    [
        ({}, False),
        ({"NCAP_TF_LOG": "1"}, True),
        ({"NCAP_TF_LOG": "0", "TF_CPP_MIN_LOG_LEVEL": "0"}, False),  # ncap decided: quiet
        ({"TF_CPP_MIN_LOG_LEVEL": "1"}, True),  # the user's own log level is a request
    ],
)
def test_when_tensorflow_log_counts_as_asked_for(env, asked, monkeypatch):
    import tensorflow  # noqa: F401  (imported: quiet_tensorflow has nothing left to hide)

    from ncap.selection import tf_quiet

    for name in ("NCAP_TF_LOG", "TF_CPP_MIN_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert tf_quiet.tf_log_asked() is asked
    assert tf_quiet.quiet_tensorflow() is False  # TensorFlow is already imported here
