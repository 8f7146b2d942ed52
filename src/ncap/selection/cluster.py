"""Dask for ``ncap select``: start a LocalCluster of worker processes, or reach a scheduler.

A run connects before it writes anything (run.json, cleared records), so a
wrong ``scheduler`` costs nothing; every step has a hard deadline and a wrong
address fails with one line (:class:`SchedulerError`), whatever answers there:
nothing, something silent, or a web server.

Worker processes are started with Python's ``spawn`` method, which imports the
user's script again in each worker: a script that calls ``ncap.select(workers=2)``
outside ``if __name__ == "__main__":`` would start it again there.
:func:`refuse_unguarded_script` says so in one error before any process starts.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import logging
import signal
import socket
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any, TypeVar

#: Seconds to reach a scheduler (each of: the handshake, the client).
CONNECT_TIMEOUT_S = 20.0
#: Seconds to start a LocalCluster's worker processes.
START_TIMEOUT_S = 120.0

T = TypeVar("T")


class SchedulerError(ValueError):
    """``scheduler`` cannot be used: nothing answers, or what answers is not a Dask scheduler."""


class UnguardedScriptError(RuntimeError):
    """``select(workers>1)`` at the top level of a script, outside the ``__main__`` guard."""


def within(seconds: float, fn: Callable[[], T], what: str) -> T:
    """``fn()`` in a helper thread, or :class:`TimeoutError` after ``seconds``.

    A hard deadline for calls that can block without one of their own; on time-out
    the helper thread is left to finish (it is a daemon) and the caller goes on.
    """
    result: list[Any] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(fn())
        except BaseException as err:  # handed to the caller's thread
            error.append(err)

    t = threading.Thread(target=target, name=f"ncap-{what}", daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise TimeoutError(f"{what} did not finish within {seconds:g} s")
    if error:
        raise error[0]
    return result[0]


def probe_scheduler(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Open one connection to ``address`` and complete Dask's handshake, within ``timeout``.

    Raises :class:`SchedulerError` with one line when nothing listens, when what
    listens never answers, or when it answers in another protocol (an HTTP server's
    reply read as a Dask frame length asks for exabytes: refused here, not allocated).
    Only ``tcp://`` (and bare ``host:port``) addresses are probed; others (``tls://``
    needs security settings) rely on the deadline of :func:`connect_scheduler`.
    """
    from distributed.comm import connect
    from distributed.comm.addressing import parse_address

    try:
        scheme, loc = parse_address(address)
    except ValueError as err:
        raise SchedulerError(f"scheduler: {address!r} is not an address: {err}") from None
    if scheme != "tcp":  # inproc (this process), tls or ws: Client's hard deadline only
        return
    _check_reachable(address, loc, timeout)

    async def handshake() -> None:
        comm = await asyncio.wait_for(connect(address, timeout=timeout), timeout)
        await comm.close()

    def attempt() -> None:
        asyncio.run(handshake())

    where = f"scheduler: cannot use {address!r}"
    try:
        within(timeout + 5.0, attempt, "scheduler-handshake")
    except (TimeoutError, asyncio.TimeoutError):
        raise SchedulerError(
            f"{where}: no Dask scheduler answered within {timeout:g} s (something may accept "
            "connections there without speaking Dask's protocol)"
        ) from None
    except MemoryError:
        raise SchedulerError(
            f"{where}: what answers there is not a Dask scheduler (its reply is not Dask's "
            "protocol; an HTTP port, e.g. the dashboard's, is not the scheduler's)"
        ) from None
    except OSError as err:
        raise SchedulerError(f"{where}: {_reason(err)}") from None
    except Exception as err:  # a garbled reply: anything the protocol layer raises
        raise SchedulerError(
            f"{where}: what answers there is not a Dask scheduler ({type(err).__name__}: {err})"
        ) from None


def _check_reachable(address: str, loc: str, timeout: float) -> None:
    """A plain TCP connect: a refused port or an unknown host fails now, not after retries."""
    from distributed.comm.addressing import parse_host_port

    where = f"scheduler: cannot use {address!r}"
    try:
        host, port = parse_host_port(loc, 8786)
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except socket.gaierror as err:
        raise SchedulerError(f"{where}: unknown host ({err.strerror})") from None
    except ConnectionRefusedError:
        raise SchedulerError(f"{where}: nothing listens there (connection refused)") from None
    except TimeoutError:
        raise SchedulerError(f"{where}: no answer within {timeout:g} s") from None
    except (OSError, ValueError) as err:
        raise SchedulerError(f"{where}: {err}") from None


def _reason(err: BaseException) -> str:
    """The innermost cause's words (distributed wraps 'connection refused' twice)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return str(err) or type(err).__name__


def connect_scheduler(address: str, timeout: float = CONNECT_TIMEOUT_S) -> Any:
    """A ``distributed.Client`` on ``address``, after :func:`probe_scheduler`; hard deadlines."""
    from distributed import Client

    probe_scheduler(address, timeout)
    try:
        return within(timeout + 5.0, lambda: Client(address, timeout=timeout), "dask-client")
    except (TimeoutError, asyncio.TimeoutError):
        raise SchedulerError(
            f"scheduler: {address!r} answered the handshake but no client session started "
            f"within {timeout:g} s"
        ) from None
    except (OSError, ValueError) as err:
        raise SchedulerError(f"scheduler: cannot use {address!r}: {_reason(err)}") from None


@contextlib.contextmanager
def local_cluster(workers: int) -> Iterator[Any]:
    """A LocalCluster of ``workers`` single-threaded processes and a client on it."""
    import dask
    from distributed import Client, LocalCluster

    refuse_unguarded_script()
    # A task that kills its worker fails at once (KilledWorker); the runner decides
    # whether to run it again (it knows whether the task had started).
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", message="Port .* is already in use")
        try:
            cluster = within(
                START_TIMEOUT_S,
                lambda: LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    preload=[__name__],  # dask_setup below, in every (re)started worker
                    # Its "marked as failed because workers died" lines would mislead: the
                    # runner requeues such tasks and reports every failure in its record.
                    silence_logs=logging.CRITICAL,
                ),
                "dask-local-cluster",
            )
        except (TimeoutError, OSError, RuntimeError) as err:
            raise RuntimeError(
                f"workers={workers}: the Dask worker processes did not start "
                f"({type(err).__name__}: {err})"
            ) from None
        try:
            client = Client(cluster)
        except BaseException:
            cluster.close()
            raise
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def dask_setup(worker: Any) -> None:
    """Dask preload of a LocalCluster's workers: Ctrl-C is the driver's, not theirs.

    A terminal sends SIGINT to the whole process group; the driver stops the run
    and closes the cluster, and workers that took it too would each print a
    KeyboardInterrupt traceback.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


# --- the __main__ guard ----------------------------------------------------------


def _guard_message(where: str) -> str:
    return (
        "ncap.select with worker processes (workers > 1 or candidate_timeout) was called "
        f"at the top level of a script{where}: each worker process imports the script "
        "again and would start ncap.select again. Put the call under "
        '`if __name__ == "__main__":`'
    )


def _script_top_level_frame() -> FrameType | None:
    """The frame running a script's top level (``__main__`` or spawn's ``__mp_main__``)."""
    main = sys.modules.get("__main__")
    f: FrameType | None = sys._getframe(1)
    while f is not None:
        if f.f_code.co_name == "<module>" and (
            f.f_globals.get("__name__") == "__mp_main__"
            or (main is not None and f.f_globals is vars(main))
        ):
            return f
        f = f.f_back
    return None


def _inside_main_guard(source: str, line: int) -> bool | None:
    """Whether ``line`` lies in an ``if __name__ == "__main__":`` block (None: cannot tell)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_main_test(node.test):
            last = max(getattr(n, "end_lineno", node.lineno) or node.lineno for n in node.body)
            if node.body[0].lineno <= line <= last:
                return True
    return False


def _is_main_test(test: ast.expr) -> bool:
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    mains = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return isinstance(test.ops[0], ast.Eq) and len(names) == 1 and len(mains) == 1


def refuse_unguarded_script() -> None:
    """Raise :class:`UnguardedScriptError` before starting worker processes that would re-run us.

    In a worker process that is importing the script (spawn's ``__mp_main__``) it
    ends that process with one line instead; in the user's process it reads the
    script to see whether the call is under the ``__main__`` guard.
    """
    import dask

    method = dask.config.get("distributed.worker.multiprocessing-method", "spawn")
    if method == "fork":  # forked workers do not import the script again
        return
    frame = _script_top_level_frame()
    if frame is None:
        return  # not under a script's top level (python -c, a notebook): nothing re-runs it
    path = frame.f_globals.get("__file__")
    where = f" ({path}, line {frame.f_lineno})" if path else ""
    if frame.f_globals.get("__name__") == "__mp_main__":  # a worker process importing it
        raise SystemExit(f"ncap: {_guard_message(where)}")
    if not path:
        return
    try:
        with open(path, encoding="utf-8") as f:
            source = f.read()
    except OSError:
        return
    if _inside_main_guard(source, frame.f_lineno) is False:
        raise UnguardedScriptError(_guard_message(where))
