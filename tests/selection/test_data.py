"""Target data for ncap.select: Dataset checks, .npz files, image directories, resolve_data."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ncap.selection.data import Dataset, load_image_directory, load_npz, resolve_data


def _arrays(n=(20, 10, 10), shape=(8, 8, 1), classes=3, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for split, m in zip(("train", "val", "test"), n, strict=True):
        out[f"x_{split}"] = rng.normal(size=(m, *shape)).astype(np.float32)
        out[f"y_{split}"] = np.arange(m) % classes
    return out


def test_dataset_normalises_inputs():
    a = _arrays(shape=(8, 8))  # grey images without a channel axis
    a["y_train"] = np.eye(3)[a["y_train"]]  # one-hot labels
    a["y_val"] = a["y_val"].astype(np.float64)
    d = Dataset(**a)
    assert d.x_train.shape == (20, 8, 8, 1) and d.x_train.dtype == np.float32
    assert d.y_train.dtype == np.int64 and list(d.y_train[:4]) == [0, 1, 2, 0]
    assert d.num_classes == 3 and d.input_shape == (8, 8, 1) and d.has_test
    s = d.summary()
    assert (s["n_train"], s["n_val"], s["n_test"]) == (20, 10, 10)


@pytest.mark.parametrize(
    "change, exc, words",
    [
        ({"y_train": np.arange(19) % 3}, ValueError, "x_train has 20 samples but y_train has 19"),
        ({"x_val": np.zeros((10, 7, 8, 1), np.float32)}, ValueError, "different sample shapes"),
        ({"y_val": -np.ones(10, int)}, ValueError, "negative labels"),
        ({"y_val": np.full(10, 0.5)}, ValueError, "integer class labels"),
        ({"y_val": np.array(["a"] * 10)}, TypeError, "integer class labels"),
        ({"x_train": np.full((20, 8, 8, 1), np.nan, np.float32)}, ValueError, "NaN or Inf"),
        ({"x_train": np.zeros((20, 2, 2, 2, 2))}, ValueError, "must have shape"),
        ({"x_test": None}, ValueError, "x_test and y_test must both be given"),
        ({"x_val": None, "y_val": None}, ValueError, "x_val is required"),
        (
            {"y_train": np.zeros(20, int), "y_val": np.zeros(10, int), "y_test": np.zeros(10, int)},
            ValueError,
            "at least 2 classes",
        ),
    ],
)
def test_dataset_rejects_bad_input(change, exc, words):
    a = {**_arrays(), **change}
    with pytest.raises(exc, match=words):
        Dataset(**a)


def test_dataset_num_classes_must_cover_the_labels():
    with pytest.raises(ValueError, match="labels go up to 2 but num_classes=2"):
        Dataset(**_arrays(), num_classes=2)
    assert Dataset(**_arrays(), num_classes=5).num_classes == 5


def test_load_npz(tmp_path):
    a = _arrays()
    p = tmp_path / "target.npz"
    np.savez(p, **a)
    d = load_npz(p)
    np.testing.assert_array_equal(d.x_val, a["x_val"])
    assert d.name == "target.npz" and d.num_classes == 3
    # Without test data: allowed (no truth).
    q = tmp_path / "no_test.npz"
    np.savez(q, **{k: v for k, v in a.items() if not k.endswith("test")})
    assert not load_npz(q).has_test
    assert resolve_data(str(p)).x_train.shape == (20, 8, 8, 1)


def test_load_npz_errors(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        load_npz(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="cannot read"):
        load_npz(bad)
    partial = tmp_path / "partial.npz"
    np.savez(partial, x_train=np.zeros((2, 3)), y_train=np.zeros(2))
    with pytest.raises(ValueError, match=r"lacks \['x_val', 'y_val'\]"):
        load_npz(partial)


def _write_images(root, classes=("cat", "dog"), n=6, size=(10, 12)):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            px = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            Image.fromarray(px).save(root / c / f"{i}.png")


def test_image_directory_random_split(tmp_path):
    _write_images(tmp_path / "imgs", n=10)
    d = load_image_directory(
        tmp_path / "imgs", image_size=(16, 16), val_fraction=0.2, test_fraction=0.2
    )
    assert d.input_shape == (16, 16, 3) and d.num_classes == 2
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (12, 4, 4)
    assert d.info["class_names"] == ["cat", "dog"]
    assert 1.0 < d.x_train.max() <= 255.0  # Keras' loader keeps 0..255
    assert sorted(np.bincount(d.y_val)) == [2, 2]  # stratified


def test_image_directory_with_split_folders(tmp_path):
    root = tmp_path / "ds"
    _write_images(root / "train", n=4)
    _write_images(root / "val", n=2)
    _write_images(root / "test", n=3)
    d = resolve_data(str(root), image_size=(8, 8), color_mode="grayscale")
    assert d.input_shape == (8, 8, 1)
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (8, 4, 6)


def test_image_directory_errors(tmp_path):
    with pytest.raises(ValueError, match="no such directory"):
        load_image_directory(tmp_path / "nothing")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "b").mkdir(parents=True)
    with pytest.raises(ValueError, match="No images found"):
        load_image_directory(tmp_path / "empty", image_size=(8, 8))


def test_resolve_data_forms(tmp_path):
    a = _arrays()
    assert resolve_data(a).name == "arrays"
    d = Dataset(**a)
    assert resolve_data(d) is d
    ex = resolve_data("example")
    assert ex.num_classes == 5 and ex.input_shape == (8, 8, 1)
    with pytest.raises(ValueError, match="unknown keys"):
        resolve_data({**a, "x_extra": 1})
    with pytest.raises(ValueError, match="missing"):
        resolve_data({"x_train": a["x_train"]})
    with pytest.raises(TypeError, match="expected a path"):
        resolve_data(42)
    with pytest.raises(ValueError, match="neither an .npz file nor an image directory"):
        resolve_data(str(tmp_path / "nothing_here"))


# --- labels and inputs that would be silently wrong -------------------------------


@pytest.mark.parametrize(
    "change, exc, words",
    [
        # One stray label must not make a classifier of ten million classes.
        (
            {"y_val": np.r_[np.arange(9) % 3, 10**7]},
            ValueError,
            r"labels up to 10000000, so 10000001 classes, but only 20 training samples",
        ),
        ({"y_val": np.r_[np.arange(9) % 3, 1e30]}, ValueError, r"holds the label 1e\+30"),
        ({"y_val": np.r_[np.zeros(9), -2.0]}, ValueError, r"negative labels \(the smallest is -2"),
        (
            {"y_val": np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 2**64 - 1], dtype=np.uint64)},
            ValueError,
            r"holds the label 1.84467e\+19",
        ),
        (
            {
                "y_train": np.arange(20) % 3 * 2,
                "y_val": np.zeros(10, int),
                "y_test": np.ones(10, int),
            },
            ValueError,
            r"labels are not 0..4: 1 of those classes never occur \(e.g. 3\)",
        ),
        (
            {"x_train": np.ones((20, 8, 8, 1), np.complex64)},
            TypeError,
            r"x_train is complex \(complex64\); ncap needs real-valued inputs",
        ),
    ],
)
def test_dataset_refuses_labels_and_inputs_it_would_misread(change, exc, words):
    with pytest.raises(exc, match=words):
        Dataset(**{**_arrays(), **change})


def test_complex_inputs_are_refused_without_a_warning(recwarn):
    with pytest.raises(TypeError, match="complex"):
        Dataset(**{**_arrays(), "x_val": np.ones((10, 8, 8, 1), np.complex128)})
    assert not [w for w in recwarn if "ComplexWarning" in type(w.message).__name__]


def test_num_classes_above_the_training_samples_is_refused():
    with pytest.raises(ValueError, match="num_classes=21 but only 20 training samples"):
        Dataset(**_arrays(), num_classes=21)


@pytest.mark.parametrize(
    "stored, result",
    [
        (np.array(5), 5),  # what np.savez makes of num_classes=5: a 0-d array
        (np.int32(4), 4),
        (np.array([5]), "one integer, got an array of shape (1,)"),
        (np.array([3, 5]), "one integer, got an array of shape (2,)"),
        (np.array(5.0), "must be an integer, got float64"),
        (np.array(True), "must be an integer, got bool"),
        (-1, "num_classes must be >= 0"),
    ],
)
def test_num_classes_from_an_npz(tmp_path, stored, result):
    p = tmp_path / "t.npz"
    np.savez(p, **_arrays(), num_classes=stored)
    if isinstance(result, int):
        assert load_npz(p).num_classes == result
    else:
        with pytest.raises((TypeError, ValueError), match=re.escape(result)):
            load_npz(p)
