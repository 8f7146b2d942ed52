"""ncap.select end to end on a tiny pool (real TF models on real digits), plus its parts."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys

import numpy as np
import pytest
from support.tiny_backbones import tiny_cnn, tiny_mlp

from ncap.selection.candidates import CandidateSpec, build_backbone, parse_candidates, safe_name
from ncap.selection.example import target_dataset
from ncap.selection.finetune import TrainSettings, data_fingerprint
from ncap.selection.record import CandidateRecord
from ncap.selection.report import CandidateResult, SelectionReport
from ncap.selection.scoring import METHODS, score_record

EPOCHS, TRUTH, K = 4, 5, 3
PROBE = (16, 16, 16)
PNG = b"\x89PNG\r\n\x1a\n"


# --- tiny candidates (module-level: Dask pickles them by value, see the Dask test) ---


def broken():
    raise RuntimeError("broken backbone on purpose")


def not_a_model():
    return "a string"


def kills_its_process():
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.fixture(scope="module")
def tiny_data():
    return target_dataset(n_train_per_class=12, n_val_per_class=8)


def _select(cands, data, out, **kw):
    import ncap

    args = dict(
        epochs=EPOCHS, truth_epochs=TRUTH, k=K, batch_size=16, hidden=PROBE, out=out, progress=False
    )
    args.update(kw)
    return ncap.select(cands, data, **args)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_data):
    out = tmp_path_factory.mktemp("run") / "out"
    report = _select({"cnn": tiny_cnn, "mlp": tiny_mlp, "broken": broken}, tiny_data, out)
    return report, out


# --- end to end -------------------------------------------------------------


def test_report_json_schema(finished_run):
    report, out = finished_run
    doc = json.loads((out / "report.json").read_text())
    assert doc["settings"]["epochs"] == EPOCHS and doc["settings"]["truth_epochs"] == TRUTH
    assert doc["data"]["num_classes"] == 5 and doc["data"]["n_train"] == 60
    assert set(doc["methods"]) == set(METHODS)
    names = [c["name"] for c in doc["candidates"]]
    assert sorted(names) == ["broken", "cnn", "mlp"]
    assert names[-1] == "broken"  # failed candidates last
    preds = [c["predicted"] for c in doc["candidates"][:2]]
    assert preds == sorted(preds, reverse=True)
    assert doc["ranking"] == names[:2] and doc["best"] == names[0]
    for m, entry in doc["methods"].items():
        met = entry["metrics"]
        assert set(met) == {"spearman", "kendall", "pearson", "top1_regret"}, m
        for key in ("spearman", "kendall", "pearson"):
            assert met[key] is None or -1.0 <= met[key] <= 1.0
        assert met["top1_regret"] >= 0.0
        assert sorted(entry["ranking"]) == ["cnn", "mlp"]
    for c in doc["candidates"][:2]:
        assert c["status"] == "ok" and c["error"] is None
        assert len(c["beta"]) == TRUTH and len(c["val_accuracy"]) == TRUTH
        assert c["observed_epochs"] == EPOCHS
        assert all(v is not None and math.isfinite(v) for v in c["beta"])
        assert 0.0 <= c["truth"] <= 1.0 and c["truth_epoch"] == TRUTH
        assert c["std"] > 0 and 1 <= c["t0"] <= EPOCHS - K + 1  # 1-based in report.json
        assert set(c["baselines"]) == {"last_seen", "best_seen", "curve_extrapolation", "logme"}
        assert c["prediction"]["k"] == K and len(c["prediction"]["window_beta"]) == K
        assert c["rank"] in (1, 2)


def test_predictions_read_only_the_observed_epochs(finished_run):
    from ncap.selection import baselines
    from ncap.selection.predict import predict_final

    report, out = finished_run
    for c in report.candidates:
        if not c.ok:
            continue
        beta, acc = c.curve("beta")[:EPOCHS], c.curve("val_accuracy")[:EPOCHS]
        p = predict_final(beta, acc, k=K)
        assert c.predicted == pytest.approx(p.predicted, abs=1e-12)
        assert c.std == pytest.approx(p.std, abs=1e-12)
        v = c.scores.values
        assert v["last_seen"] == acc[-1] and v["best_seen"] == acc.max()
        assert v["curve_extrapolation"] == pytest.approx(
            baselines.curve_extrapolation(acc, TRUTH).value
        )
        assert math.isfinite(v["logme"])


def test_failing_candidate_is_reported_and_the_rest_completes(finished_run):
    report, out = finished_run
    bad = [c for c in report.candidates if c.name == "broken"][0]
    assert not bad.ok and "broken backbone on purpose" in bad.error
    rec = json.loads((out / "candidates" / "broken.json").read_text())
    assert rec["status"] == "failed" and rec["error"]["stage"] == "build"
    assert "RuntimeError" in rec["error"]["traceback"]
    assert all(math.isnan(v) for v in bad.scores.values.values())
    assert sum(c.ok for c in report.candidates) == 2
    table = str(report)
    assert "FAILED broken" in table and "broken backbone on purpose" in table


def test_candidate_files_and_plots_written(finished_run):
    report, out = finished_run
    assert sorted(os.listdir(out / "candidates")) == ["broken.json", "cnn.json", "mlp.json"]
    plots = sorted(os.listdir(out / "plots"))
    assert plots == [
        "accuracy_vs_beta.png",
        "beta.png",
        "learning_curves.png",
        "predicted_vs_true.png",
    ]
    for p in plots:
        data = (out / "plots" / p).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
    run = json.loads((out / "run.json").read_text())
    assert set(run["candidates"]) == {"cnn", "mlp", "broken"}


def test_table_lists_ranking_and_metrics(finished_run):
    report, _ = finished_run
    table = report.table()
    for word in (
        "cnn",
        "mlp",
        "spearman",
        "kendall",
        "pearson",
        "top-1 regret",
        "LogME",
        "report.json",
        "±",
    ):
        assert word in table
    first = report.candidates[0]
    assert f"{first.predicted:.3f} ± {first.std:.3f}" in table


def test_resume_skips_finished_and_reruns_the_rest(finished_run, tmp_path, tiny_data):
    _, out = finished_run
    run = tmp_path / "resumed"
    shutil.copytree(out, run)
    os.remove(run / "candidates" / "mlp.json")  # interrupted before mlp finished
    cnn_before = (run / "candidates" / "cnn.json").read_text()
    report = _select(
        {"cnn": tiny_cnn, "mlp": tiny_mlp, "broken": broken},
        tiny_data,
        run,
        resume=True,
        plots=False,
    )
    assert report.settings["resumed"] == ["cnn"]  # failed 'broken' is tried again
    assert (run / "candidates" / "cnn.json").read_text() == cnn_before
    mlp = json.loads((run / "candidates" / "mlp.json").read_text())
    assert mlp["status"] == "ok" and len(mlp["beta"]) == TRUTH
    assert {c.name for c in report.candidates if c.ok} == {"cnn", "mlp"}
    assert any("resumed" in n for n in report.notes)


def test_resume_key_changes_with_training_settings(tiny_data):
    spec = parse_candidates({"cnn": tiny_cnn})[0]
    base = TrainSettings(4, 5, 16, 1e-3, 0, PROBE, 0.4)
    fp = data_fingerprint(tiny_data)
    key = base.key(spec, fp)
    assert key == TrainSettings(4, 5, 16, 1e-3, 0, PROBE, 0.4, threads=3).key(spec, fp)
    for other in (
        TrainSettings(4, 5, 16, 2e-3, 0, PROBE, 0.4),
        TrainSettings(4, 6, 16, 1e-3, 0, PROBE, 0.4),
        TrainSettings(4, 5, 16, 1e-3, 1, PROBE, 0.4),
    ):
        assert other.key(spec, fp) != key
    other_data = target_dataset(n_train_per_class=13, n_val_per_class=8)
    assert base.key(spec, data_fingerprint(other_data)) != key


def test_in_process_candidate_errors_of_other_kinds(tmp_path, tiny_data):
    report = _select([not_a_model], tiny_data, None, truth_epochs=None, epochs=3, k=3)
    (c,) = report.candidates
    assert not c.ok and "not a keras.Model" in c.error
    assert report.metrics["ncap"] is None and report.out is None


@pytest.mark.slow
def test_dask_two_workers_with_a_killed_worker(tmp_path, tiny_data):
    import cloudpickle

    # Workers cannot import this test module: send the candidates by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cloudpickle.register_pickle_by_value(sys.modules["support.tiny_backbones"])
    out = tmp_path / "dask"
    report = _select(
        {"cnn": tiny_cnn, "killer": kills_its_process},
        tiny_data,
        out,
        workers=2,
        threads=1,
        plots=False,
    )
    by = {c.name: c for c in report.candidates}
    assert by["cnn"].ok and math.isfinite(by["cnn"].predicted)
    assert not by["killer"].ok and by["killer"].record.error.stage == "dask"
    assert "KilledWorker" in by["killer"].error
    assert sorted(os.listdir(out / "candidates")) == ["cnn.json", "killer.json"]
    # The worker's record is a whole training run (its numbers differ from an in-process
    # run's: TensorFlow's thread count changes float sums, and the run then diverges).
    val = np.asarray(by["cnn"].curve("val_accuracy"))
    assert len(val) == len(by["cnn"].record.beta) and np.all((val >= 0) & (val <= 1))
    assert np.all(np.isfinite(by["cnn"].record.beta))


def test_existing_scheduler_address(tiny_data):
    from distributed import LocalCluster

    # A cluster in this process (threads): tests the scheduler path without spawning TF twice.
    with LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        report = _select(
            {"cnn": tiny_cnn},
            tiny_data,
            None,
            truth_epochs=None,
            scheduler=cluster.scheduler_address,
        )
    (c,) = report.candidates
    assert c.ok and len(c.record.beta) == EPOCHS and c.truth is None
    assert report.settings["scheduler"] == cluster.scheduler_address
    assert report.metrics["ncap"] is None  # no truth, no metrics
    assert "spearman" not in report.table()


# --- argument checking (no training happens) -------------------------------


@pytest.mark.parametrize(
    "kw, exc, words",
    [
        ({"epochs": 1}, ValueError, "epochs must be >= 2"),
        ({"epochs": 3, "k": 5}, ValueError, "k=5 needs at least 5"),
        ({"truth_epochs": 2}, ValueError, "truth_epochs must be >= 4"),
        ({"t0": 3}, ValueError, "t0=3"),
        ({"hidden": (8, 8)}, ValueError, "three hidden layers"),
        ({"learning_rate": -1.0}, ValueError, "learning rate must be positive"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"workers": 0}, ValueError, "workers"),
        ({"epochs": 4.5}, TypeError, "epochs must be an int"),
        ({"dropout": 1.0}, ValueError, "dropout"),
        ({"resume": True, "out": None}, ValueError, "resume=True needs out"),
    ],
)
def test_bad_arguments(kw, exc, words, tiny_data):
    with pytest.raises(exc, match=words):
        _select({"cnn": tiny_cnn}, tiny_data, kw.pop("out", None), **kw)


def test_bad_data_and_candidates(tmp_path, tiny_data):
    import ncap

    with pytest.raises(ValueError, match="no such file"):
        ncap.select(["MobileNetV2"], str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match="name the backbones"):
        ncap.select(None, str(tmp_path))
    with pytest.raises(ValueError, match="not a keras.applications name"):
        ncap.select(["NoSuchNet"], tiny_data)
    with pytest.raises(ValueError, match="truth_epochs needs test data"):
        ncap.select(
            [tiny_cnn],
            {
                "x_train": tiny_data.x_train,
                "y_train": tiny_data.y_train,
                "x_val": tiny_data.x_val,
                "y_val": tiny_data.y_val,
            },
            epochs=5,
            truth_epochs=6,
        )


# --- candidates ---------------------------------------------------------------


def test_parse_candidates_kinds(tmp_path):
    model_path = tmp_path / "my net.keras"
    tiny_mlp().save(model_path)
    specs = parse_candidates(
        [
            "MobileNetV2",
            "keras.applications.ResNet50",
            "example:cnn-wide",
            str(model_path),
            tiny_cnn,
            "ncap.selection.example:build_backbone",
            {"name": "mine", "model": "VGG16", "weights": "w.h5", "input_size": 48},
        ],
        weights="imagenet",
    )
    kinds = [(s.name, s.kind) for s in specs]
    assert kinds == [
        ("MobileNetV2", "application"),
        ("ResNet50", "application"),
        ("cnn-wide", "example"),
        ("my_net", "saved"),
        ("tiny_cnn", "callable"),
        ("build_backbone", "callable"),
        ("mine", "application"),
    ]
    assert specs[0].weights == "imagenet" and specs[6].weights == "w.h5"
    assert specs[6].input_size == (48, 48)
    # Names stay unique.
    twice = parse_candidates([tiny_cnn, tiny_cnn])
    assert [s.name for s in twice] == ["tiny_cnn", "tiny_cnn-2"]
    assert safe_name("a/b c:d") == "a_b_c_d"


@pytest.mark.parametrize(
    "bad, words",
    [
        ("NoSuchNet", "not a keras.applications name"),
        ("example:nope", "unknown example backbone"),
        ("missing/model.keras", "no such model file"),
        ({"model": "VGG16", "colour": 1}, "a dict candidate needs"),
        ([], "empty"),
    ],
)
def test_parse_candidates_errors(bad, words):
    with pytest.raises(ValueError, match=words):
        parse_candidates(bad)
    with pytest.raises(TypeError, match="cannot use a int"):
        parse_candidates([3])


def test_application_is_adapted_to_small_grey_images():
    spec = parse_candidates(["MobileNetV3Small"])[0]
    m = build_backbone(spec, (8, 8, 1))
    assert m.input_shape == (None, 8, 8, 1)
    names = [layer.name for layer in m.layers]
    assert "resize" in names and "grey_to_rgb" in names and "preprocess" in names
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 1)).astype("float32")
    y = np.asarray(m(x))
    assert y.shape[0] == 2 and y.ndim == 2 and np.all(np.isfinite(y))


def test_callable_gets_input_shape_and_features_are_pooled():
    import keras

    def conv_maps(input_shape):
        inp = keras.Input(input_shape)
        return keras.Model(inp, keras.layers.Conv2D(3, 3, padding="same")(inp))

    m = build_backbone(CandidateSpec("c", "callable", conv_maps), (8, 8, 1))
    assert m.output_shape == (None, 3)


def test_backbone_with_two_outputs_is_refused_clearly():
    """A candidate with two outputs fails with a message that says so, not an AttributeError."""
    import keras

    def two_outputs(input_shape):
        inp = keras.Input(input_shape)
        flat = keras.layers.Flatten()(inp)
        return keras.Model(inp, [keras.layers.Dense(4)(flat), keras.layers.Dense(3)(flat)])

    with pytest.raises(ValueError, match=r"1 input\(s\) and 2 output\(s\)"):
        build_backbone(CandidateSpec("two", "callable", two_outputs), (8, 8, 1))


# --- scoring and report without training -------------------------------------


def _record(name, beta, acc, truth, logme=0.1, logme_error=None):
    return CandidateRecord(
        name=name,
        candidate={"kind": "callable"},
        key="k",
        status="ok",
        epochs_trained=len(beta),
        beta=beta,
        val_accuracy=acc,
        truth=truth,
        truth_epoch=20,
        logme=logme,
        logme_error=logme_error,
    )


def test_score_record_matches_the_predictor_and_baselines():
    from ncap.selection import baselines
    from ncap.selection.predict import predict_final

    beta = [3.0, 2.5, 2.1, 1.6, 1.4, 1.1, 0.5]
    acc = [0.30, 0.40, 0.47, 0.55, 0.58, 0.62, 0.70]
    s = score_record(_record("a", beta, acc, 0.8), epochs=6, k=4, t0=None, final_epoch=20)
    p = predict_final(beta[:6], acc[:6], k=4)
    assert s.values["ncap"] == pytest.approx(p.predicted) and s.prediction.t0 == p.t0
    assert s.values["last_seen"] == 0.62 and s.values["best_seen"] == 0.62
    assert s.values["curve_extrapolation"] == pytest.approx(
        baselines.curve_extrapolation(acc[:6], 20).value
    )
    assert s.values["logme"] == 0.1 and not s.errors


def test_score_record_keeps_other_methods_when_one_fails():
    rec = _record(
        "a",
        [1.0, None, 0.8, 0.7],
        [0.3, 0.4, 0.5, 0.55],
        0.7,
        logme=None,
        logme_error="ValueError: too few samples",
    )
    s = score_record(rec, epochs=4, k=3, t0=None, final_epoch=10)
    assert math.isnan(s.values["ncap"]) and "NaN" in s.errors["ncap"]
    assert s.values["last_seen"] == 0.55
    assert s.errors["logme"] == "ValueError: too few samples"


def test_report_ranks_and_metrics_from_records():
    from ncap.selection.metrics import ranking_metrics

    rng = np.random.default_rng(1)
    recs: list[CandidateRecord] = []
    for i in range(5):
        acc = list(np.linspace(0.2, 0.3 + 0.1 * i, 6) + rng.normal(0, 0.01, 6))
        beta = list(np.linspace(2.0, 1.0, 6) + rng.normal(0, 0.05, 6))
        recs.append(_record(f"m{i}", beta, acc, 0.5 + 0.08 * i, logme=float(i)))
    recs.append(CandidateRecord.failed("dead", {"kind": "callable"}, "boom"))
    results = [
        CandidateResult(r, score_record(r, epochs=6, k=5, t0=None, final_epoch=20), 6) for r in recs
    ]
    rep = SelectionReport.build(results, {"epochs": 6, "truth_epochs": 20}, {"name": "syn"})
    preds = [c.predicted for c in rep.candidates[:5]]
    assert preds == sorted(preds, reverse=True) and rep.candidates[-1].name == "dead"
    assert rep.ranking("logme") == ["m4", "m3", "m2", "m1", "m0"]
    truth = [c.truth or math.nan for c in rep.candidates]
    for m in METHODS:
        expect = ranking_metrics([c.scores.values[m] for c in rep.candidates], truth)
        assert rep.metrics[m] == pytest.approx(expect, nan_ok=True)
    assert rep.metrics["logme"]["spearman"] == pytest.approx(1.0)
    doc = json.loads(json.dumps(rep.to_dict(), allow_nan=False))
    assert doc["methods"]["logme"]["ranking"][0] == "m4"
    with pytest.raises(ValueError, match="method must be one of"):
        rep.ranking("oracle")
