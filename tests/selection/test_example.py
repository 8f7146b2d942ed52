"""The built-in example: digits 0-4 -> 5-9, its backbone pool, pre-training cache, full run."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from ncap.selection import example
from ncap.selection.example import POOL, load_backbone, source_data, target_dataset


def test_pool_is_varied():
    """At least 12 backbones spanning architecture and pre-training (none, brief, full, other)."""
    assert len(POOL) >= 12
    assert len({s.name for s in POOL}) == len(POOL)
    recipes = {(s.kind, s.widths, s.activation, s.source_classes, s.pretrain_epochs) for s in POOL}
    assert len(recipes) == len(POOL)
    assert {s.kind for s in POOL} == {"cnn", "mlp"}
    assert {0, 1, 20} <= {s.pretrain_epochs for s in POOL}  # none, brief, full
    assert len({s.source_classes for s in POOL}) >= 2  # other classes
    assert len({s.activation for s in POOL}) >= 3
    for kind in ("cnn", "mlp"):
        same = [s for s in POOL if s.kind == kind]
        assert len({s.widths for s in same}) >= 3, kind  # widths and depths
        assert {0, 1, 20} <= {s.pretrain_epochs for s in same}, kind
    assert example.candidates() == [f"example:{s.name}" for s in POOL]


def test_source_and_target_tasks_are_disjoint():
    from sklearn.datasets import load_digits

    x, y = source_data()
    assert set(np.unique(y)) == {0, 1, 2, 3, 4}
    d = target_dataset()
    n_target = int(np.isin(load_digits().target, example.TARGET_CLASSES).sum())
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == n_target
    assert len(x) + n_target == 1797
    # 60/20/20 per class: an epoch at batch 32 has >= 15 steps (the paper's regime).
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (537, 179, 180)
    assert -(-len(d.x_train) // example.SETTINGS["batch_size"]) >= 15
    counts = np.bincount(load_digits().target)[list(example.TARGET_CLASSES)]
    for labels, frac in ((d.y_train, 0.6), (d.y_val, 0.2)):
        np.testing.assert_array_equal(np.bincount(labels), np.round(frac * counts))  # stratified
    small = target_dataset(n_train_per_class=12, n_val_per_class=8)
    assert (len(small.x_train), len(small.x_val)) == (60, 40)
    with pytest.raises(ValueError, match="leave test images"):
        target_dataset(n_train_per_class=150, n_val_per_class=40)
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    with pytest.raises(ValueError, match="overlap the target"):
        source_data((4, 5))


def test_backbones_build_to_feature_vectors():
    for spec in POOL:
        m = example.build_backbone(spec)
        assert m.input_shape == (None, 8, 8, 1)
        assert len(m.output_shape) == 2 and m.output_shape[1] > 0


def test_pretraining_is_cached_and_rebuilt_when_corrupt(tmp_path, monkeypatch):
    monkeypatch.setenv("NCAP_CACHE", str(tmp_path))
    first = load_backbone("cnn-brief")  # one epoch of pre-training: quick
    files = os.listdir(example.cache_dir())
    assert len(files) == 1 and files[0].startswith("cnn-brief-")
    fresh = example.build_backbone(example.POOL_BY_NAME["cnn-brief"])
    assert any(
        not np.allclose(a, b) for a, b in zip(first.get_weights(), fresh.get_weights(), strict=True)
    )

    def no_pretraining(spec):
        raise AssertionError("pre-trained again although cached")

    monkeypatch.setattr(example, "pretrain", no_pretraining)
    again = load_backbone("cnn-brief")
    for a, b in zip(first.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    monkeypatch.undo()
    monkeypatch.setenv("NCAP_CACHE", str(tmp_path))
    path = os.path.join(example.cache_dir(), files[0])
    with open(path, "wb") as f:
        f.write(b"corrupt")
    rebuilt = load_backbone("cnn-brief")
    for a, b in zip(first.get_weights(), rebuilt.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)  # same seed, same pre-training
    with pytest.raises(ValueError, match="unknown example backbone"):
        load_backbone("resnet-9000")


def test_cache_key_follows_the_recipe():
    """The cache key depends on every field of the recipe and on nothing else."""
    a = example.POOL_BY_NAME["cnn-wide"]
    assert example.BackboneSpec(**a.__dict__).key() == a.key()  # a copy: same key
    for field, value in [("pretrain_epochs", 21), ("seed", 99)]:
        if field in a.__dict__:
            assert example.BackboneSpec(**{**a.__dict__, field: value}).key() != a.key(), field


@pytest.mark.slow
def test_default_example_end_to_end(tmp_path, monkeypatch, capsys):
    """`ncap select` with no arguments: the whole built-in example (2-4 minutes on 2 cores)."""
    from ncap.selection.cli import main

    monkeypatch.setenv("NCAP_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert main(["select"]) == 0
    out = capsys.readouterr().out
    (run,) = os.listdir(tmp_path / "ncap-runs")
    doc = json.loads((tmp_path / "ncap-runs" / run / "report.json").read_text())
    assert len(doc["candidates"]) == len(POOL)
    assert all(c["status"] == "ok" and c["truth"] is not None for c in doc["candidates"])
    assert doc["settings"]["epochs"] == 10 and doc["settings"]["truth_epochs"] == 30
    assert doc["settings"]["threads"] == 1 and doc["settings"]["beta"] == "step"
    assert doc["data"]["n_train"] == 537 and doc["data"]["n_val"] == 179
    truths = [c["truth"] for c in doc["candidates"]]
    assert max(truths) - min(truths) > 0.1  # a real spread to rank
    for m in ("ncap", "last_seen", "best_seen", "curve_extrapolation", "logme"):
        assert doc["methods"][m]["metrics"] is not None
    for m in ("ncap", "last_seen", "best_seen", "curve_extrapolation"):
        assert doc["methods"][m]["accuracy"]["n"] == len(POOL)
    assert set(doc["picks"]) == {"ncap", "last_seen", "best_seen", "curve_extrapolation", "logme"}
    assert all(0.0 <= c["predicted"] <= 1.0 for c in doc["candidates"])
    assert "spearman" in out and "report:" in out and run in out and "picks:" in out
