"""Where candidates run, and how a run ends: schedulers that cannot be used, the
``__main__`` guard, candidates that end their process, Ctrl-C, time limits.

Scheduler cases use local sockets on 127.0.0.1 only: a port nobody listens on, a
thread that accepts and never answers, a tiny HTTP server. Training cases use
tiny real Keras models on real digits.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support.tiny_backbones import tiny_cnn, tiny_mlp

import ncap
from ncap.selection.cli import EXIT_INTERRUPTED, main
from ncap.selection.cluster import (
    SchedulerError,
    UnguardedScriptError,
    _inside_main_guard,
    probe_scheduler,
)
from ncap.selection.record import CandidateRecord
from ncap.selection.runner import RunInterrupted
from ncap.selection.store import RunStore

pytest.importorskip("distributed")

SRC = str(Path(ncap.__file__).resolve().parents[1])
TESTS = str(Path(__file__).resolve().parents[1])
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


def _env() -> dict[str, str]:
    return dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([SRC, TESTS, os.environ.get("PYTHONPATH", "")]),
        TF_CPP_MIN_LOG_LEVEL="2",
    )


# --- local servers that are not Dask schedulers ------------------------------------


@pytest.fixture
def silent_port():
    """A port that accepts connections and never sends a byte."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join()
    for c in held:
        c.close()
    srv.close()


@pytest.fixture
def http_port():
    """A tiny HTTP server that answers whatever arrives with 400 Bad Request (as nginx does)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                c = srv.accept()[0]
            except OSError:
                continue
            with c:
                c.settimeout(2)
                try:
                    c.recv(4096)
                    c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join()
    srv.close()


@pytest.fixture
def stdlib_http_port():
    """Python's own HTTP server (it waits for a whole request line before it answers)."""
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_port_that_accepts_and_never_answers_fails_within_the_timeout(silent_port):
    t = time.monotonic()
    with pytest.raises(SchedulerError, match="no Dask scheduler answered within 1 s"):
        probe_scheduler(f"tcp://127.0.0.1:{silent_port}", timeout=1.0)
    assert time.monotonic() - t < 10  # a hang guard: the deadline held (not 150 s)


def test_http_endpoint_is_refused_without_allocating(http_port):
    # Without the probe, distributed reads "HTTP/1.1" as a frame length and asks for 3 EiB.
    with pytest.raises(SchedulerError, match="not a Dask scheduler"):
        probe_scheduler(f"tcp://127.0.0.1:{http_port}", timeout=5.0)


def test_http_server_that_waits_for_a_request_line(stdlib_http_port):
    with pytest.raises(SchedulerError, match="no Dask scheduler answered within 1 s"):
        probe_scheduler(f"127.0.0.1:{stdlib_http_port}", timeout=1.0)


@pytest.mark.parametrize(
    "address, words",
    [
        ("tcp://127.0.0.1:{free}", "nothing listens there"),
        ("tcp://no-such-host.invalid:8786", "unknown host"),
        ("tcp://[::1", "cannot use"),
    ],
)
def test_unusable_addresses(address, words):
    with pytest.raises(SchedulerError, match=words) as info:
        probe_scheduler(address.format(free=_free_port()), timeout=2.0)
    assert "\n" not in str(info.value)  # one line


def test_wrong_scheduler_fails_before_the_run_directory_changes(tmp_path, tiny_data, http_port):
    out = tmp_path / "run"
    with RunStore(out) as store:  # an earlier run's directory
        store.open(fresh=True)
        store.save(CandidateRecord.failed("m", {"kind": "callable"}, "an earlier run's"))
    (out / "run.json").write_text('{"earlier": true}')
    (out / "report.json").write_text('{"earlier": true}')
    before = {p: (out / p).read_bytes() for p in ("run.json", "report.json", "candidates/m.json")}
    for address in (f"tcp://127.0.0.1:{http_port}", f"tcp://127.0.0.1:{_free_port()}"):
        with pytest.raises(SchedulerError, match="scheduler: cannot use"):
            _select({"m": tiny_mlp}, tiny_data, out, scheduler=address)
        assert {p: (out / p).read_bytes() for p in before} == before


# --- the __main__ guard ------------------------------------------------------------

_UNGUARDED = """\
import ncap

report = ncap.select(workers=2, progress=False)
"""


def test_unguarded_script_gets_one_clear_error(tmp_path):
    script = tmp_path / "unguarded.py"
    script.write_text(_UNGUARDED)
    r = subprocess.run(
        [sys.executable, str(script)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert r.returncode == 1
    assert f"UnguardedScriptError: {'ncap.select'}" in r.stderr
    assert 'if __name__ == "__main__":' in r.stderr and f"{script}, line 3" in r.stderr
    assert "Nanny" not in r.stderr and len(r.stderr.strip().splitlines()) < 15


def test_worker_importing_an_unguarded_script_stops_with_one_line(tmp_path):
    import runpy

    script = tmp_path / "child.py"
    script.write_text(
        "from ncap.selection.cluster import refuse_unguarded_script\nrefuse_unguarded_script()\n"
    )
    # This is how a spawned worker process imports the user's script.
    with pytest.raises(SystemExit, match="ncap: .*top level of a script.*__main__"):
        runpy.run_path(str(script), run_name="__mp_main__")


@pytest.mark.parametrize(
    "source, line, inside",
    [
        ("import ncap\nncap.select()\n", 2, False),
        ('if __name__ == "__main__":\n    x = 1\n    ncap.select()\n', 3, True),
        ("if '__main__' == __name__:\n    ncap.select()\n", 2, True),
        ('if __name__ != "__main__":\n    ncap.select()\n', 2, False),
        ('def f():\n    ncap.select()\n\nif __name__ == "__main__":\n    f()\n', 5, True),
        ("this is not python(\n", 1, None),
    ],
)
def test_main_guard_detection(source, line, inside):
    assert _inside_main_guard(source, line) is inside


def test_calls_from_functions_are_not_refused(tiny_data):
    from ncap.selection.cluster import refuse_unguarded_script

    refuse_unguarded_script()  # from a test function: no script top level on the stack
    assert issubclass(UnguardedScriptError, RuntimeError)


# --- candidates that end their process, in this process ----------------------------


def exits_hard():
    os._exit(3)


def exits_politely():
    sys.exit(4)


def test_candidate_calling_exit_is_reported_and_the_run_goes_on(tiny_data, tmp_path):
    report = _select(
        {"hard": exits_hard, "polite": exits_politely, "m": tiny_mlp}, tiny_data, tmp_path / "r"
    )
    by = {c.name: c for c in report.candidates}
    assert "os._exit(3)" in by["hard"].error and "ended the whole run" in by["hard"].error
    assert "sys.exit(4)" in by["polite"].error
    assert by["m"].ok and len(by["m"].record.beta) == EPOCHS
    assert os._exit.__module__ == "posix"  # the guard is gone after the run
    rec = json.loads((tmp_path / "r" / "candidates" / "hard.json").read_text())
    assert rec["status"] == "failed" and rec["error"]["stage"] == "build"


# --- Ctrl-C ----------------------------------------------------------------------


def test_interrupt_says_how_many_are_saved(tiny_data, tmp_path):
    def stop():
        raise KeyboardInterrupt  # what Ctrl-C raises in the middle of a candidate

    out = tmp_path / "run"
    with pytest.raises(RunInterrupted) as info:
        _select({"a": tiny_mlp, "stop": stop, "c": tiny_cnn}, tiny_data, out)
    err = info.value
    assert (err.saved, err.total, err.out) == (1, 3, str(out))
    assert isinstance(err, KeyboardInterrupt)
    assert sorted(os.listdir(out / "candidates")) == ["a.json"]
    assert RunStore(out).load("a")[0].ok
    # The lock went with the interrupted run: resume can take the folder.
    again = _select({"a": tiny_mlp}, tiny_data, out, resume=True)
    assert again.settings["resumed"] == ["a"] and again.candidates[0].ok


def test_ctrl_c_swallowed_by_the_candidates_code_still_interrupts(tiny_data, tmp_path):
    # A real SIGINT whose KeyboardInterrupt a bare ``except:`` turns into another error, as
    # TensorFlow's DType.max does under Keras' Dropout: the run stops, it is not a failure.
    def swallows():
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1.0)  # the handler runs here
        except:  # noqa: E722 - the library code this stands for
            raise TypeError("Cannot find maximum value of <dtype: 'int32'>.") from None
        raise AssertionError("SIGINT was not delivered")

    out = tmp_path / "run"
    with pytest.raises(RunInterrupted) as info:
        _select({"a": tiny_mlp, "swallows": swallows, "c": tiny_cnn}, tiny_data, out)
    assert (info.value.saved, info.value.total) == (1, 3)
    assert sorted(os.listdir(out / "candidates")) == ["a.json"]  # not saved as failed
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's again


def _npz(tmp_path: Path, data) -> Path:
    p = tmp_path / "target.npz"
    np.savez(p, x_train=data.x_train, y_train=data.y_train, x_val=data.x_val, y_val=data.y_val)
    return p


def test_cli_interrupt_prints_one_line_and_exits_130(tiny_data, tmp_path, monkeypatch, capsys):
    (tmp_path / "ncap_h4_stopper.py").write_text("def stop():\n    raise KeyboardInterrupt\n")
    _npz(tmp_path, tiny_data)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the CLI adds the working directory
    argv = ["select", "ncap_h4_stopper:stop", "support.tiny_backbones:tiny_mlp"]
    argv += ["--data", "target.npz", "--epochs", "3", "-k", "3", "--hidden", "8,8,8"]
    argv += ["--batch-size", "16", "--out", "run", "--no-plots", "-q"]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == EXIT_INTERRUPTED == 130
    line = err.strip().splitlines()[-1]
    assert line == (
        f"ncap select: interrupted: 0 of 2 candidates saved in {tmp_path / 'run'}; "
        f"rerun with --resume --out {tmp_path / 'run'} to continue"
    )
    assert "Traceback" not in err and out == ""


@pytest.mark.slow
def test_sigint_to_the_process_group_during_training(tmp_path, tiny_data):
    """A real Ctrl-C (SIGINT to the whole process group) while a candidate trains."""
    _npz(tmp_path, tiny_data)
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "ncap", "select"]
    argv += [f"support.tiny_backbones:{n}" for n in ("tiny_mlp", "wide_mlp", "tiny_cnn")]
    argv += ["--data", "target.npz", "--epochs", "30", "-k", "3", "--hidden", "8,8,8"]
    argv += ["--batch-size", "4", "--out", str(out), "--no-plots"]
    proc = subprocess.Popen(
        argv,
        env=_env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a command
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not list((out / "candidates").glob("*.json")):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            time.sleep(0.05)
        time.sleep(1.0)  # into the next candidate's training
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("ncap select: interrupted: ") and "--resume" in last
    saved = int(last.split("interrupted: ")[1].split(" of ")[0])
    assert saved == len(list((out / "candidates").glob("*.json"))) >= 1
    assert "Traceback" not in err


# --- settings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, exc, words",
    [
        ({"candidate_timeout": 0}, ValueError, "candidate timeout must be a positive"),
        ({"candidate_timeout": float("inf")}, ValueError, "candidate timeout"),
        ({"candidate_timeout": "60"}, ValueError, "candidate timeout"),
        ({"retries": -1}, ValueError, "retries must be >= 0"),
        ({"retries": 1.5}, TypeError, "retries must be an int"),
    ],
)
def test_bad_run_settings(kw, exc, words, tiny_data):
    with pytest.raises(exc, match=words):
        _select({"m": tiny_mlp}, tiny_data, None, **kw)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--candidate-timeout", "-5"], "candidate timeout must be a positive"),
        (["--candidate-timeout", "soon"], "candidate timeout must be a number"),
        (["--retries", "-1"], "retries must be >= 0"),
    ],
)
def test_cli_flags_are_checked(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        main(["select", *argv])
    assert info.value.code == 2 and words in capsys.readouterr().err


def test_help_names_the_new_flags(capsys):
    with pytest.raises(SystemExit):
        main(["select", "--help"])
    text = capsys.readouterr().out
    assert "--candidate-timeout SECONDS" in text and "--retries N" in text
    assert "130 interrupted" in text


# --- time limits -----------------------------------------------------------------


def hangs():
    time.sleep(3600)


@pytest.mark.slow
def test_candidate_timeout_stops_a_hanging_candidate_and_the_run_goes_on(tiny_data, tmp_path):
    import cloudpickle

    # Workers cannot import this test module: send the candidates by value.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cloudpickle.register_pickle_by_value(sys.modules["support.tiny_backbones"])
    out = tmp_path / "run"
    limit = 60.0  # far above a tiny candidate's time, TensorFlow's import included
    t = time.monotonic()
    report = _select(
        {"hangs": hangs, "m": tiny_mlp}, tiny_data, out, candidate_timeout=limit, threads=1
    )
    elapsed = time.monotonic() - t
    by = {c.name: c for c in report.candidates}
    hung = by["hangs"]
    assert not hung.ok and hung.record.timed_out
    assert "timed out" in hung.error and "candidate_timeout=60" in hung.error
    assert by["m"].ok and len(by["m"].record.beta) == EPOCHS
    stored = json.loads((out / "candidates" / "hangs.json").read_text())
    assert stored["error"]["stage"] == "timeout" and stored["timing"]["total_s"] >= limit
    assert elapsed < 3600  # the hanging candidate did not hold the run
    assert report.settings["candidate_timeout"] == limit


def kills_itself_once(marker_dir: str):
    """Kills its own process the first time it is built; a normal backbone afterwards."""
    marker = os.path.join(marker_dir, "killed-once")
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return tiny_mlp()


@pytest.mark.slow
def test_retries_rerun_a_candidate_whose_worker_died(tiny_data, tmp_path):
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    cloudpickle.register_pickle_by_value(sys.modules["support.tiny_backbones"])
    report = _select(
        {"once": functools.partial(kills_itself_once, str(tmp_path)), "m": tiny_cnn},
        tiny_data,
        tmp_path / "run",
        workers=2,
        threads=1,
        retries=1,
    )
    by = {c.name: c for c in report.candidates}
    assert (tmp_path / "killed-once").exists()  # it did die once
    assert by["once"].ok and len(by["once"].record.beta) == EPOCHS
    assert by["m"].ok
    assert any(
        "once: its worker died while it ran; run again (retry 1 of 1)" in n for n in report.notes
    )
