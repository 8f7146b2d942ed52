"""Candidates as a user names them: resolution, distinct errors, weights checked up front,
and every input adaptation said out loud (header) and recorded (report)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import ncap
from ncap.selection.adapt import plan_adaptation
from ncap.selection.candidates import (
    build_adapted_backbone,
    check_weights,
    parse_candidates,
    planned_adaptation,
)
from ncap.selection.cli import main

# Where the ncap under test was imported from: a subprocess must import the same one.
SRC = str(Path(ncap.__file__).resolve().parents[1])

BACKBONE_MODULE = textwrap.dedent(
    """
    WIDTH = 3


    def tiny_cnn():
        import keras

        inp = keras.Input((8, 8, 1))
        h = keras.layers.Conv2D(4, 3, activation="relu")(inp)
        return keras.Model(inp, keras.layers.Flatten()(h))
    """
)
# What pip writes for the `ncap` entry point (its sys.path[0] is the script's folder).
CONSOLE_SCRIPT = textwrap.dedent(
    """
    import re
    import sys
    from ncap.selection.cli import main
    if __name__ == "__main__":
        sys.argv[0] = re.sub(r"(-script\\.pyw|\\.exe)?$", "", sys.argv[0])
        sys.exit(main())
    """
)
TINY_RUN = ["--epochs", "2", "-k", "2", "--batch-size", "16", "--hidden", "8,8,8", "--no-plots"]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A user's folder with mybb.py and target.npz; sys.path and sys.modules restored after."""
    from ncap.selection.example import target_dataset

    proj = tmp_path / "project"
    proj.mkdir()
    (proj / "mybb.py").write_text(BACKBONE_MODULE)
    d = target_dataset(n_train_per_class=8, n_val_per_class=6)
    np.savez(
        proj / "target.npz", x_train=d.x_train, y_train=d.y_train, x_val=d.x_val, y_val=d.y_val
    )
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(proj))])
    monkeypatch.delitem(sys.modules, "mybb", raising=False)
    yield proj
    sys.modules.pop("mybb", None)


def _run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


# --- module:function from the working directory -----------------------------------


def test_module_function_from_the_working_directory_through_main(project, monkeypatch, capsys):
    """`ncap select mybb:tiny_cnn` imports mybb.py from the working directory and runs it."""
    monkeypatch.chdir(project)
    code, out, err = _run(
        ["select", "mybb:tiny_cnn", "--data", "target.npz", "--out", "run", *TINY_RUN], capsys
    )
    assert code == 0, err
    assert "tiny_cnn" in out
    doc = json.loads((project / "run" / "report.json").read_text())
    (cand,) = doc["candidates"]
    assert cand["status"] == "ok" and cand["candidate"]["kind"] == "callable"
    assert cand["candidate"]["source"] == "mybb.tiny_cnn"


def test_console_script_from_another_directory(project, tmp_path):
    """A console script (its sys.path starts at its own folder) resolves mybb:tiny_cnn from
    the working directory; stderr has the header, plain progress lines and no TensorFlow
    CUDA-probe lines."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "ncap"
    script.write_text(CONSOLE_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "NCAP_TF_LOG")}
    env["PYTHONPATH"] = SRC
    r = subprocess.run(
        [sys.executable, str(script), "select", "mybb:tiny_cnn", "--data", "target.npz"]
        + ["--out", "run", *TINY_RUN],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert "tiny_cnn" in r.stdout
    assert "candidates:" in r.stderr and "[1/1] tiny_cnn" in r.stderr
    for noise in ("cuInit", "Could not find cuda drivers", "absl::InitializeLog"):
        assert noise not in r.stderr
    assert len(r.stderr.splitlines()) < 20  # a header and a few lines, not a bar per epoch


def _module(tmp_path, monkeypatch, name, text):
    (tmp_path / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)


@pytest.mark.parametrize(
    "candidate, exc, words",
    [
        ("nosuchmodule:net", ValueError, "no module named 'nosuchmodule'"),
        (
            "needsdep:net",
            ValueError,
            "importing module 'needsdep' failed: ModuleNotFoundError: No module named 'absentdep'",
        ),
        ("okmod:tiny_cn", ValueError, "has no attribute 'tiny_cn' (did you mean tiny_cnn?)"),
        ("okmod:WIDTH", TypeError, "okmod.WIDTH is a int, not a callable"),
        ("brokenmod:net", ValueError, "importing module 'brokenmod' failed: ZeroDivisionError"),
    ],
)
def test_module_function_errors_are_distinct(tmp_path, monkeypatch, candidate, exc, words):
    """Module missing, a module whose import fails, no such attribute, not callable."""
    _module(tmp_path, monkeypatch, "needsdep", "import absentdep\n")
    _module(tmp_path, monkeypatch, "okmod", BACKBONE_MODULE)
    _module(tmp_path, monkeypatch, "brokenmod", "x = 1 / 0\n")
    with pytest.raises(exc) as info:
        parse_candidates([candidate])
    assert words in str(info.value)
    assert str(info.value).startswith(f"candidates: {candidate!r}")


@pytest.mark.parametrize(
    "typo, suggestion",
    [("ResNet5O", "ResNet50"), ("mobilenetv2", "MobileNetV2"), ("cnn-wide", "example:cnn-wide")],
)
def test_unknown_names_suggest_close_ones(typo, suggestion):
    with pytest.raises(ValueError, match="is not a keras.applications name") as info:
        parse_candidates([typo])
    assert f"did you mean {suggestion}" in str(info.value)


def test_a_name_with_nothing_close_gets_no_suggestion():
    with pytest.raises(ValueError) as info:
        parse_candidates(["Zzzzzz"])
    assert "did you mean" not in str(info.value) and "'module:function'" in str(info.value)


# --- weights, before any training -------------------------------------------------


def test_missing_weights_file_fails_in_one_line_before_training(project, monkeypatch, capsys):
    monkeypatch.chdir(project)
    argv = ["select", "MobileNetV2", "--weights", "nosuch.h5", "--data", "target.npz"]
    code, out, err = _run([*argv, "--out", "run", "-q", *TINY_RUN], capsys)
    assert code == 2 and out == ""
    assert err.strip().count("\n") == 0
    assert "no such weights file 'nosuch.h5'" in err and "--weights imagenet" in err
    assert not (project / "run" / "candidates").exists()  # nothing was trained


def test_weights_of_the_wrong_type():
    specs = parse_candidates([{"model": "MobileNetV2", "weights": 3}])
    with pytest.raises(TypeError, match="expected None, 'imagenet' or a file path, got int"):
        check_weights(specs, (8, 8, 1))


def test_weights_file_that_exists_passes(tmp_path):
    w = tmp_path / "w.weights.h5"
    w.write_bytes(b"not checked here, loaded by Keras")
    assert check_weights(parse_candidates(["MobileNetV2"], weights=str(w)), (8, 8, 1)) == []


def test_imagenet_weights_are_looked_up_in_keras_cache(tmp_path):
    """Without the file in KERAS_HOME/models (and no network): one line saying where it
    goes and what else to do; with the file there, the check passes without a download."""
    code = textwrap.dedent(
        """
        import os, sys
        from ncap.selection.candidates import check_weights, keras_cache_dir, parse_candidates
        specs = parse_candidates(["MobileNetV2"], weights="imagenet")
        try:
            check_weights(specs, (8, 8, 1))
        except ValueError as err:
            print("ERROR", err)
        else:
            sys.exit("the check passed without the file")
        models = os.path.join(keras_cache_dir(), "models")
        (name,) = [f for f in os.listdir(models) if not f.startswith(".")] or ["-"]
        print("EMPTY", name)
        fname = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
        path = os.path.join(models, fname)
        open(path, "wb").close()
        print("OK", check_weights(specs, (8, 8, 1)))
        """
    )
    home = tmp_path / "keras-home"
    home.mkdir()
    env = {**os.environ, "KERAS_HOME": str(home), "PYTHONPATH": SRC}
    env["https_proxy"] = env["HTTPS_PROXY"] = "http://127.0.0.1:9"  # no network, even if there is
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr + r.stdout
    lines = dict(
        line.split(" ", 1) for line in r.stdout.splitlines() if line[:2] in ("ER", "EM", "OK")
    )
    err = lines["ERROR"]
    assert "MobileNetV2's ImageNet weights are not in Keras' cache" in err
    assert str(home / "models" / "mobilenet_v2_weights_tf_dim_ordering") in err
    assert "--weights PATH" in err and "downloading them failed" in err
    assert lines["EMPTY"] == "-"  # the failed download left nothing behind
    assert lines["OK"] == "[]"


# --- input adaptations ------------------------------------------------------------------


def test_application_adaptation_is_planned_before_building():
    """8x8 grey digits in 0..1 for MobileNetV2: resize, grey->RGB, x255, preprocess_input."""
    spec = parse_candidates(["MobileNetV2"])[0]
    plan = planned_adaptation(spec, (8, 8, 1), (0.0, 1.0))
    assert plan.resize == (32, 32) and plan.channels == "grey_to_rgb"
    assert plan.rescale == (255.0, 0.0)
    assert plan.lines == [
        "images resized 8x8 -> 32x32 (bilinear)",
        "grey -> 3 channels (the one channel copied)",
        "pixels 0..1 scaled by 255 to 0..255 (data span 0..1)",
        "preprocess_input (mobilenet_v2) maps 0..255 to -1.00..1.00",
    ]
    assert planned_adaptation(parse_candidates(["example:cnn-wide"])[0], (8, 8, 1), None) is None


def test_built_backbone_follows_the_plan():
    """The layers apply the planned steps: 0..1 pixels reach preprocess_input as 0..255."""
    import keras

    spec = parse_candidates(["MobileNetV3Small"])[0]
    model, plan = build_adapted_backbone(spec, (8, 8, 1), (0.0, 1.0))
    names = [layer.name for layer in model.layers]
    assert names[:5] == ["input", "resize", "grey_to_rgb", "rescale_pixels", "preprocess"]
    x = np.random.default_rng(0).uniform(0, 1, (2, 8, 8, 1)).astype("float32")
    upto = keras.Model(model.input, model.get_layer("rescale_pixels").output)
    scaled = np.asarray(upto(x))
    assert scaled.shape == (2, 32, 32, 3) and 1.0 < scaled.max() <= 255.0
    assert plan.lines[-1].startswith("preprocess_input (mobilenet_v3) leaves pixels as they are")


@pytest.mark.parametrize(
    "pixels, preprocess, expect",
    [
        ((0.0, 255.0), True, []),
        ((3.0, 200.0), True, []),
        ((-1.0, 1.0), True, ["pixels -1..1 mapped to 0..255 (data span -1..1)"]),
        ((-2.1, 2.6), True, ["WARNING: the data's pixels span -2.1..2.6, not 0..255"]),
        ((0.0, 1.0), False, ["preprocess_input not applied (--no-preprocess)"]),
    ],
)
def test_pixel_range_is_rescaled_or_warned_about(pixels, preprocess, expect):
    plan = plan_adaptation(
        "m", (32, 32, 3), (32, 32, 3), application="VGG16", preprocess=preprocess, pixels=pixels
    )
    lines = [ln for ln in plan.lines if "preprocess_input (" not in ln]
    assert len(lines) == len(expect)
    for line, start in zip(lines, expect, strict=True):
        assert line.startswith(start)
    assert (plan.preprocess is not None) == preprocess


def test_example_backbones_get_the_0_to_1_pixels_they_were_pre_trained_on():
    from ncap.selection.candidates import adaptation

    spec = parse_candidates(["example:cnn-wide"])[0]
    assert adaptation(spec, (8, 8, 1), (8, 8, 1), (0.0, 1.0)).lines == []
    plan = adaptation(spec, (8, 8, 1), (8, 8, 1), (3.0, 250.0))
    assert plan.rescale == pytest.approx((1 / 255, 0.0))
    assert plan.lines == ["pixels 0..255 divided by 255 to 0..1 (data span 3..250)"]
    user = parse_candidates([wants_16x16_rgb])[0]  # a user's model: its range is unknown
    assert adaptation(user, (16, 16, 3), (16, 16, 3), (0.0, 255.0)).lines == []


def test_shapes_that_cannot_be_adapted():
    with pytest.raises(ValueError, match="candidate 'm': the backbone wants 3 channels"):
        plan_adaptation("m", (8, 8, 2), (8, 8, 3))
    with pytest.raises(ValueError, match="takes inputs of shape"):
        plan_adaptation("m", (64,), (8, 8, 1))


def wants_16x16_rgb():
    import keras

    inp = keras.Input((16, 16, 3))
    return keras.Model(inp, keras.layers.Flatten()(keras.layers.Conv2D(2, 3)(inp)))


def test_adaptations_are_recorded_per_candidate_in_the_report(tmp_path):
    """A callable that wants 16x16 RGB on 8x8 grey digits: report.json says what was done."""
    from support.tiny_backbones import tiny_mlp

    from ncap.selection.example import target_dataset

    data = target_dataset(n_train_per_class=8, n_val_per_class=6)
    report = ncap.select(
        {"rgb16": wants_16x16_rgb, "mlp": tiny_mlp},
        data,
        epochs=2,
        k=2,
        batch_size=16,
        hidden=(8, 8, 8),
        out=tmp_path / "run",
        plots=False,
        progress=False,
    )
    doc = json.loads((tmp_path / "run" / "report.json").read_text())
    by = {c["name"]: c for c in doc["candidates"]}
    assert by["rgb16"]["adaptations"] == [
        "images resized 8x8 -> 16x16 (bilinear)",
        "grey -> 3 channels (the one channel copied)",
    ]
    assert by["mlp"]["adaptations"] == []
    assert "rgb16: images resized 8x8 -> 16x16 (bilinear); grey -> 3 channels" in report.table()
