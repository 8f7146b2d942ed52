"""The run directory keeps a user's files safe: marker, no links followed, lock, writability.

Store-level cases need no training; the end-to-end cases run ``ncap.select`` on
tiny real models and check that a refused folder is refused before any training
and left exactly as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.tiny_backbones import tiny_mlp

import ncap
from ncap.selection.record import CandidateRecord
from ncap.selection.store import LOCK, MARKER, RUN_DIR_VERSION, RunDirError, RunStore

SRC = str(Path(ncap.__file__).resolve().parents[1])
EPOCHS, K = 3, 3
PROBE = (8, 8, 8)


@pytest.fixture(scope="module")
def tiny_data():
    from ncap.selection.example import target_dataset

    return target_dataset(n_train_per_class=8, n_val_per_class=4)


def _select(cands, data, out, **kw):
    args = dict(epochs=EPOCHS, k=K, batch_size=16, hidden=PROBE, plots=False, progress=False)
    args.update(kw)
    return ncap.select(cands, data, out=out, **args)


def _tree(root: Path) -> dict[str, bytes | str]:
    """Every entry under root: file contents, link targets, directories (no link followed)."""
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = f"-> {os.readlink(p)}"
            elif p.is_dir():
                out[rel] = "<dir>"
            else:
                out[rel] = p.read_bytes()
    return out


def _record(name: str) -> CandidateRecord:
    return CandidateRecord(
        name=name,
        candidate={"kind": "callable", "source": "x"},
        key="k",
        status="ok",
        epochs_trained=2,
        beta=[1.0, 0.5],
        val_accuracy=[0.2, 0.3],
    )


# --- a folder that is not ncap's ----------------------------------------------------


def test_non_empty_folder_without_marker_is_refused_and_untouched(tmp_path, tiny_data):
    user = tmp_path / "mine"
    (user / "candidates").mkdir(parents=True)
    (user / "candidates" / "thesis.json").write_text('{"chapter": 1}')
    (user / "report.json").write_text("my report")
    before = _tree(user)
    built = []

    def watched():
        built.append(1)
        return tiny_mlp()

    with pytest.raises(RunDirError, match="not an ncap run directory"):
        _select({"m": watched}, tiny_data, user)
    assert _tree(user) == before and not built  # refused before any training


def test_new_and_empty_folders_are_accepted_and_marked(tmp_path):
    for out in (tmp_path / "new" / "deeper", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        with RunStore(out) as store:
            store.open(fresh=True)
            marker = json.loads((out / MARKER).read_text())
            assert marker["ncap_run_directory"] == RUN_DIR_VERSION
            assert (out / "candidates").is_dir()


def test_marker_of_a_newer_layout_is_refused(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"ncap_run_directory": RUN_DIR_VERSION + 1}))
    with pytest.raises(RunDirError, match="newer ncap"):
        RunStore(out)


@pytest.mark.parametrize("bad", ["file", "broken link"])
def test_out_that_cannot_be_a_directory(tmp_path, bad):
    out = tmp_path / "out"
    if bad == "file":
        out.write_text("x")
    else:
        out.symlink_to(tmp_path / "nowhere")
    with pytest.raises(RunDirError, match="not a directory|broken symbolic link"):
        RunStore(out)


# --- symbolic links -------------------------------------------------------------------


@pytest.mark.parametrize("sub", ["candidates", "plots"])
def test_linked_subdirectory_is_refused_and_its_target_kept(tmp_path, sub, tiny_data):
    out = tmp_path / "run"
    with RunStore(out) as store:  # a real ncap run directory
        store.open(fresh=True)
    if (out / sub).exists():
        shutil.rmtree(out / sub)
    target = tmp_path / "precious"
    target.mkdir()
    (target / "a.json").write_text("keep me")
    (target / "b.png").write_bytes(b"keep me too")
    (out / sub).symlink_to(target, target_is_directory=True)
    with pytest.raises(RunDirError, match="symbolic link"):
        _select({"m": tiny_mlp}, tiny_data, out)
    assert sorted(os.listdir(target)) == ["a.json", "b.png"]
    assert (target / "a.json").read_text() == "keep me"


def test_clearing_removes_links_not_their_targets(tmp_path):
    out = tmp_path / "run"
    with RunStore(out) as store:
        store.open(fresh=True)
        store.save(_record("old"))
    outside = tmp_path / "outside.json"
    outside.write_text("not ncap's")
    (out / "candidates" / "linked.json").symlink_to(outside)
    (out / "candidates" / "keep.json").mkdir()  # not a file: not ncap's to remove
    with RunStore(out) as store:
        store.open(fresh=True)
    assert outside.read_text() == "not ncap's"
    assert sorted(os.listdir(out / "candidates")) == ["keep.json"]


# --- what an earlier run left ---------------------------------------------------------


def test_fresh_run_removes_earlier_records_report_and_plots_only(tmp_path):
    out = tmp_path / "run"
    with RunStore(out) as store:
        store.open(fresh=True)
        store.save(_record("old"))
    (out / "report.json").write_text("{}")
    (out / "report.csv").write_text("rank,name\n")
    (out / "plots").mkdir()
    (out / "plots" / "beta.png").write_bytes(b"\x89PNG old")
    (out / "notes.txt").write_text("mine")
    with RunStore(out) as store:
        store.open(fresh=True)
    assert os.listdir(out / "candidates") == []
    assert not (out / "report.json").exists() and not (out / "report.csv").exists()
    assert os.listdir(out / "plots") == []
    assert (out / "notes.txt").read_text() == "mine"


def test_resumed_run_keeps_records_and_drops_the_stale_report(tmp_path):
    out = tmp_path / "run"
    with RunStore(out) as store:
        store.open(fresh=True)
        store.save(_record("old"))
    (out / "report.json").write_text("{}")
    with RunStore(out) as store:
        store.open(fresh=False)
        rec, problem = store.load("old")
    assert problem is None and rec == _record("old")
    assert not (out / "report.json").exists()


def test_fresh_run_with_no_plots_leaves_no_stale_plot(tmp_path, tiny_data):
    out = tmp_path / "run"
    with RunStore(out) as store:  # an earlier run that drew plots
        store.open(fresh=True)
    (out / "plots").mkdir()
    (out / "plots" / "beta.png").write_bytes(b"\x89PNG an earlier run's")
    _select({"m": tiny_mlp}, tiny_data, out, plots=False)
    assert os.listdir(out / "plots") == []
    doc = json.loads((out / "report.json").read_text())
    assert not any(f.startswith("plots") for f in doc["files"])


# --- one run at a time ----------------------------------------------------------------


def test_second_store_on_a_locked_folder_gets_a_clear_error(tmp_path):
    out = tmp_path / "run"
    first = RunStore(out)
    first.open(fresh=True)
    try:
        second = RunStore(out)
        with pytest.raises(
            RunDirError, match=rf"in use by another ncap select run \(pid {os.getpid()}\)"
        ):
            second.open(fresh=True)
        first.save(_record("a"))  # the refused run cleared nothing
        assert os.path.exists(first.path("a"))
    finally:
        first.close()
    with RunStore(out) as again:  # released: the folder can be taken again
        again.open(fresh=False)


def test_lock_held_by_another_process(tmp_path, tiny_data):
    out = tmp_path / "run"
    holder = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {SRC!r})
        from ncap.selection.store import RunStore
        s = RunStore({str(out)!r}); s.open(fresh=True)
        print("locked", flush=True)
        time.sleep(120)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(
            RunDirError, match=rf"in use by another ncap select run \(pid {proc.pid}\)"
        ):
            _select({"m": tiny_mlp}, tiny_data, out)
    finally:
        proc.kill()
        proc.wait()
    assert (out / LOCK).exists()
    _select({"m": tiny_mlp}, tiny_data, out)  # the holder is gone: its lock went with it
    assert (out / "report.json").exists()


# --- writability ----------------------------------------------------------------------


@pytest.fixture
def read_only(tmp_path):
    """Make a directory read-only, also for root (chmod alone does not stop root)."""
    made = []

    def make(d: Path) -> Path:
        d.chmod(0o555)
        made.append(d)
        probe = d / ".probe"
        try:
            probe.write_text("")
        except OSError:
            return d
        probe.unlink()
        if shutil.which("chattr") is None:
            pytest.skip("cannot make a read-only directory here (root without chattr)")
        r = subprocess.run(["chattr", "+i", str(d)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot make a read-only directory here: {r.stderr.strip()}")
        return d

    yield make
    for d in made:
        subprocess.run(["chattr", "-i", str(d)], capture_output=True)
        d.chmod(0o755)


def test_read_only_out_fails_before_any_training(tmp_path, tiny_data, read_only):
    out = tmp_path / "ro"
    out.mkdir()
    read_only(out)
    built = []

    def watched():
        built.append(1)
        return tiny_mlp()

    with pytest.raises(RunDirError, match=r"cannot write into .*ro"):
        _select({"m": watched}, tiny_data, out)
    assert not built
    # A new folder under a read-only parent, and a read-only candidates/ in a run directory.
    with pytest.raises(RunDirError, match="cannot write into"):
        RunStore(out / "new")
    run = tmp_path / "run"
    with RunStore(run) as store:
        store.open(fresh=True)
    read_only(run / "candidates")
    with pytest.raises(RunDirError, match=r"cannot write into .*run/candidates"):
        _select({"m": watched}, tiny_data, run)
    assert not built


# --- records that cannot be reused ------------------------------------------------------


def _deep(n: int) -> str:
    return '{"a": ' * n + "1" + "}" * n


_GOOD = _record("cand").to_dict()


def _with(**changes) -> str:
    return json.dumps({**_GOOD, **changes})


@pytest.mark.parametrize(
    "text, words",
    [
        (_with(epochs_trained="2"), "epochs_trained"),
        (_with(beta=[1.0, "x"]), r"beta\[1\]"),
        (_with(status="done"), "status"),
        (_with(version=True), "version"),
        (_with(name=["cand"]), "name"),
        (json.dumps(_GOOD).replace("0.5", "NaN"), "NaN is not a number"),
        (json.dumps(_GOOD).replace("0.5", "Infinity"), "Infinity is not a number"),
        (json.dumps(_GOOD).replace("0.5", "1e999"), "finite number"),
        (json.dumps({k: v for k, v in _GOOD.items() if k != "beta"}), r"missing fields \['beta'\]"),
        (json.dumps({k: v for k, v in _GOOD.items() if k != "key"}), r"missing fields \['key'\]"),
        (_with(candidate=json.loads(_deep(40))), "candidate: expected an object of"),
        (_with(timing={"fit_s": {"deep": 1}}), "timing"),
        (_deep(100_000), "RecursionError"),
        ("[1, 2]", "expected a JSON object"),
        ('{"name": "cand", ', "JSONDecodeError"),
        (_with(name="other"), "holds candidate 'other'"),
    ],
)
def test_malformed_record_is_not_reused(tmp_path, text, words):
    out = tmp_path / "run"
    (out / "candidates").mkdir(parents=True)
    (out / MARKER).write_text("")
    (out / "candidates" / "cand.json").write_text(text)
    rec, problem = RunStore(out).load("cand")
    assert rec is None and problem is not None
    assert re.search(words, problem), problem


def test_record_that_is_not_a_regular_file_is_not_opened(tmp_path):
    out = tmp_path / "run"
    (out / "candidates").mkdir(parents=True)
    (out / MARKER).write_text("")
    os.mkfifo(out / "candidates" / "fifo.json")  # opening it would block for ever
    (out / "candidates" / "link.json").symlink_to(tmp_path / "elsewhere.json")
    store = RunStore(out)
    assert store.load("fifo") == (None, "not a regular file")
    assert store.load("link") == (None, "not a regular file")
    assert store.load("absent") == (None, None)


def test_resume_reruns_a_malformed_record_with_a_note(tmp_path, tiny_data):
    out = tmp_path / "run"
    first = _select({"b": tiny_mlp}, tiny_data, out)
    assert first.candidates[0].ok
    path = out / "candidates" / "b.json"
    path.write_text(path.read_text().replace('"epochs_trained": 3', '"epochs_trained": "3"'))
    again = _select({"b": tiny_mlp}, tiny_data, out, resume=True)
    assert again.settings["resumed"] == []
    assert json.loads(path.read_text())["epochs_trained"] == EPOCHS  # b ran again
    assert any(
        "b's stored record was not reused" in n and "epochs_trained" in n for n in again.notes
    )
    assert again.candidates[0].ok
