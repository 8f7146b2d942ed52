"""Selection runs survive faults.

* A Dask worker is killed (SIGKILL, from outside) while it is fine-tuning a
  candidate: the run still finishes, every other candidate (also those only
  queued on that worker) finishes with a complete record that matches an
  undisturbed run's, and the killed candidate is reported as a failure.
* A whole run is killed (SIGKILL of the driving process) after some candidates
  finished; ``resume=True`` completes it, and the report equals the report of
  an uninterrupted run: same records, same predictions, same rankings.

Real TensorFlow models on real data (sklearn digits via ncap.example), kept tiny.
"""

from __future__ import annotations

import functools
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support.tiny_backbones import tiny_cnn, tiny_mlp, wide_mlp

import ncap

pytest.importorskip("tensorflow")
pytest.importorskip("distributed")

EPOCHS, TRUTH, K = 4, 5, 3
PROBE = (16, 16, 16)
# Where the ncap under test was imported from (src/ in a checkout, site-packages
# when installed): subprocesses must import the same one.
SRC = str(Path(ncap.__file__).resolve().parents[1])


# --- candidates (module level; sent to Dask workers by value) -----------------


def marked_cnn(marker_dir: str):
    """A CNN whose first training-mode call leaves ``fit-PID`` in ``marker_dir``.

    Keras traces the train step once, so the file appears when fine-tuning has
    begun: the signal for the test to kill this worker mid-candidate.
    """
    import keras

    class FitMarker(keras.layers.Layer):
        def call(self, x, training=None):
            if training:
                path = os.path.join(marker_dir, f"fit-{os.getpid()}")
                if not os.path.exists(path):
                    with open(path, "w") as f:
                        f.write(str(time.time()))
            return x

    inp = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(6, 3, activation="relu")(inp)
    h = FitMarker()(h)
    return keras.Model(inp, keras.layers.Flatten()(h))


@pytest.fixture(scope="module")
def tiny_data():
    from ncap.selection.example import target_dataset

    return target_dataset(n_train_per_class=12, n_val_per_class=8)


def _kill_when_marked(marker_dir: Path, delay: float, timeout: float, killed: list) -> None:
    """Wait for ``fit-PID`` in marker_dir, let training run ``delay`` s, then SIGKILL PID."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        marks = list(marker_dir.glob("fit-*"))
        if marks:
            pid = int(marks[0].name.split("-", 1)[1])
            time.sleep(delay)
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
            return
        time.sleep(0.05)


def _comparable(rec: dict) -> dict:
    """A candidate record without what legitimately differs between runs (timings)."""
    return {k: v for k, v in rec.items() if k not in ("timing",)}


@pytest.mark.slow
def test_worker_killed_mid_candidate_run_finishes(tmp_path, tiny_data):
    import cloudpickle

    import ncap

    # Workers cannot import this test module: send the candidates by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cloudpickle.register_pickle_by_value(sys.modules["support.tiny_backbones"])
    markers = tmp_path / "markers"
    markers.mkdir()
    # The victim is submitted first, so it runs first on its worker; with five
    # candidates on two single-threaded workers, others wait queued behind it there.
    cands = {
        "victim": functools.partial(marked_cnn, str(markers)),
        "cnn": tiny_cnn,
        "mlp": tiny_mlp,
        "wide": wide_mlp,
        "cnn-b": tiny_cnn,
    }
    killed: list = []
    killer = threading.Thread(
        target=_kill_when_marked, args=(markers, 0.5, 240, killed), daemon=True
    )
    killer.start()
    out = tmp_path / "run"
    report = ncap.select(
        cands,
        tiny_data,
        epochs=EPOCHS,
        truth_epochs=TRUTH,
        k=K,
        batch_size=16,
        hidden=PROBE,
        out=out,
        workers=2,
        threads=1,
        progress=False,
        plots=False,
    )
    killer.join(timeout=5)
    assert killed, "the victim candidate never started fine-tuning (no marker file)"

    by = {c.name: c for c in report.candidates}
    assert set(by) == set(cands)
    victim = by["victim"]
    assert not victim.ok and victim.record.error.stage == "dask"  # retries=0
    assert "KilledWorker" in victim.error
    # The others ran to the end (a queued one was submitted again), and their
    # stored records are the report's.
    for name in ("cnn", "mlp", "wide", "cnn-b"):
        c = by[name]
        assert c.ok, f"{name} failed after another worker was killed: {c.error}"
        assert len(c.record.beta) == TRUTH and len(c.record.val_accuracy) == TRUTH
        assert all(math.isfinite(b) for b in c.record.beta)
        assert math.isfinite(c.predicted) and c.truth is not None
        stored = json.loads((out / "candidates" / f"{name}.json").read_text())
        assert _comparable(stored) == _comparable(c.record.to_dict())
    assert json.loads((out / "report.json").read_text())["ranking"]
    # Intact means the same numbers as a run nobody disturbed (same workers, same threads).
    calm = ncap.select(
        {"cnn": tiny_cnn, "mlp": tiny_mlp},
        tiny_data,
        epochs=EPOCHS,
        truth_epochs=TRUTH,
        k=K,
        batch_size=16,
        hidden=PROBE,
        out=None,
        workers=2,
        threads=1,
        progress=False,
        plots=False,
    )
    for c in calm.candidates:
        np.testing.assert_allclose(by[c.name].record.beta, c.record.beta, rtol=1e-6)
        np.testing.assert_allclose(
            by[c.name].record.val_accuracy, c.record.val_accuracy, atol=1e-12
        )


# --- a whole run killed and resumed --------------------------------------------

_DRIVER = textwrap.dedent(
    """
    import sys

    import ncap
    from ncap.selection.example import target_dataset
    from support.tiny_backbones import tiny_cnn, tiny_mlp, wide_mlp

    out, resume = sys.argv[1], sys.argv[2] == "resume"
    data = target_dataset(n_train_per_class=12, n_val_per_class=8)
    ncap.select({"cnn": tiny_cnn, "mlp": tiny_mlp, "wide": wide_mlp}, data,
                epochs=4, truth_epochs=5, k=3, batch_size=16, hidden=(16, 16, 16),
                out=out, resume=resume, workers=1, threads=1, progress=False, plots=False)
    """
)


def _driver(tmp_path: Path) -> tuple[Path, dict]:
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    tests = str(Path(__file__).resolve().parents[1])  # for support.tiny_backbones
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([SRC, tests, os.environ.get("PYTHONPATH", "")]),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return script, env


def _run(script: Path, env: dict, out: Path, mode: str) -> None:
    proc = subprocess.run(
        [sys.executable, str(script), str(out), mode],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def _report_without_run_facts(out: Path) -> dict:
    """report.json minus what differs between a resumed and a straight run by design."""
    rep = json.loads((out / "report.json").read_text())
    rep.pop("elapsed_s", None)
    rep.pop("notes", None)  # the resumed run says it resumed
    rep.get("settings", {}).pop("resumed", None)
    for c in rep.get("candidates", []):
        c.pop("timing", None)
    return rep


@pytest.mark.slow
def test_killed_run_resumed_gives_the_uninterrupted_report(tmp_path):
    script, env = _driver(tmp_path)

    straight = tmp_path / "straight"
    _run(script, env, straight, "fresh")

    broken = tmp_path / "broken"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(broken), "fresh"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:
            done = list((broken / "candidates").glob("*.json"))
            if done:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGKILL)  # no clean-up, no finally blocks: a hard stop
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    finished = sorted(p.name for p in (broken / "candidates").glob("*.json"))
    assert 1 <= len(finished) < 3, finished
    assert not (broken / "report.json").exists()

    _run(script, env, broken, "resume")
    resumed = json.loads((broken / "report.json").read_text())
    assert sorted(resumed["settings"]["resumed"]) == [f[:-5] for f in finished]

    want = _report_without_run_facts(straight)
    got = _report_without_run_facts(broken)
    assert got["ranking"] == want["ranking"]
    assert got == want
