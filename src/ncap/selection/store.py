"""The run directory of ``ncap select``.

It holds ``.ncap-run`` (the marker that says ncap made the folder),
``.ncap-run.lock`` (held while a run writes), ``run.json``,
``candidates/NAME.json``, ``report.json`` and ``plots/``.

The rules that keep a user's files safe:

* a folder that is not empty and has no marker is refused (ncap never writes
  into, or clears, a folder it did not make);
* nothing is followed through a symbolic link: ``candidates/`` or ``plots/``
  as links are refused, and clearing removes entries, never a link's target;
* one run at a time: the lock is taken before anything is cleared or written,
  and a second run into the same folder gets :class:`RunDirError`;
* writability is checked (:meth:`RunStore.check`) before any training.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import tempfile
from typing import Any

from .record import CandidateRecord, RecordError

MARKER = ".ncap-run"
LOCK = ".ncap-run.lock"
#: Version of the run directory layout, written into the marker.
RUN_DIR_VERSION = 1
#: What the report step writes besides plots; an earlier run's are removed at the start.
REPORT_FILES = ("report.json", "report.csv")
RUN_FILE = "run.json"
SUBDIRS = ("candidates", "plots")


class RunDirError(ValueError):
    """The run directory cannot be used: not ncap's, not writable, or in use by another run."""


def write_json(path: str, obj: Any) -> None:
    """Write JSON atomically (a reader never sees half a file)."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".json.tmp", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, allow_nan=False)
            f.write("\n")
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a run directory is meant to be read
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class RunStore:
    """The run directory: records, report and plots, with its marker and lock.

    Creating a ``RunStore`` checks the folder without changing it (see
    :meth:`check`); :meth:`open` takes it for a run; :meth:`close` (or the end of a
    ``with`` block) lets it go.
    """

    def __init__(self, out: str | os.PathLike[str]) -> None:
        self.out = os.path.abspath(os.fspath(out))
        self.candidates_dir = os.path.join(self.out, "candidates")
        self._lock_fd: int | None = None
        self.check()

    # --- checks (nothing is written) -------------------------------------

    def check(self) -> None:
        """Refuse a folder a run must not use; raises :class:`RunDirError` saying why.

        Not a directory, not empty and not an ncap run directory, a symbolic link
        where ncap writes, or a folder this process cannot write into.
        """
        out = self.out
        if not os.path.exists(out):
            if os.path.lexists(out):
                raise RunDirError(f"out: {out!r} is a broken symbolic link")
            _check_writable(_existing_parent(out), out)
            return
        if not os.path.isdir(out):
            raise RunDirError(f"out: {out!r} exists and is not a directory")
        entries = set(os.listdir(out)) - {LOCK}  # a lock alone: a run that stopped at once
        if entries and MARKER not in entries:
            raise RunDirError(
                f"out: {out!r} is not empty and is not an ncap run directory (it has no "
                f"{MARKER} file); ncap writes only into a new or empty folder or an earlier "
                "run's, so choose another --out"
            )
        for name in (MARKER, LOCK, RUN_FILE, *REPORT_FILES, *SUBDIRS):
            path = os.path.join(out, name)
            if os.path.islink(path):
                raise RunDirError(
                    f"out: {path!r} is a symbolic link; ncap does not write or delete "
                    "through links in a run directory (remove the link)"
                )
        for name in SUBDIRS:
            path = os.path.join(out, name)
            if os.path.exists(path) and not os.path.isdir(path):
                raise RunDirError(f"out: {path!r} exists and is not a directory")
        _check_marker_version(os.path.join(out, MARKER))
        for d in (out, *(os.path.join(out, s) for s in SUBDIRS)):
            if os.path.isdir(d):
                _check_writable(d, d)

    # --- taking the folder for a run ---------------------------------------

    def open(self, *, fresh: bool) -> None:
        """Lock the folder for this run, mark it, and remove what an earlier run left.

        A fresh run removes the earlier records (``candidates/*.json``); every run
        removes the earlier report (``report.json``, ``report.csv``) and plots, so
        what the folder holds at the end is this run's. Raises :class:`RunDirError`
        if another run holds it.
        """
        if self._lock_fd is not None:
            return
        self.check()  # again: the folder may have changed since the run was planned
        os.makedirs(self.out, exist_ok=True)
        self._lock_fd = _lock(os.path.join(self.out, LOCK), self.out)
        try:
            from .. import __version__

            write_json(
                os.path.join(self.out, MARKER),
                {"ncap_run_directory": RUN_DIR_VERSION, "ncap_version": __version__},
            )
            if fresh:
                self.clear()
            _remove_files(os.path.join(self.out, "plots"), (".png",))
            for name in REPORT_FILES:
                _remove_file(os.path.join(self.out, name))
            os.makedirs(self.candidates_dir, exist_ok=True)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the lock (the folder stays as it is)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # --- records ------------------------------------------------------------

    def path(self, name: str) -> str:
        return os.path.join(self.candidates_dir, f"{name}.json")

    def load(self, name: str) -> tuple[CandidateRecord | None, str | None]:
        """A stored record and None, or None and why it cannot be reused.

        Absent is (None, None); an unreadable, torn or malformed file is
        (None, reason): the candidate is run again, never trusted.
        """
        path = self.path(name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None, None
        except OSError as err:
            return None, f"{type(err).__name__}: {err}"
        if not stat.S_ISREG(st.st_mode):  # a link, a FIFO (open would block), a directory
            return None, "not a regular file"
        try:
            with open(path) as f:
                raw = json.load(f, parse_constant=_refuse_constant)
            rec = CandidateRecord.from_dict(raw)
        except (OSError, ValueError, RecursionError) as err:
            return None, f"{type(err).__name__}: {err}"
        if rec.name != name:
            return None, f"the file holds candidate {rec.name!r}"
        return rec, None

    def save(self, record: CandidateRecord) -> None:
        write_json(self.path(record.name), record.to_dict())

    def clear(self) -> None:
        """Remove stored candidate records (a fresh, non-resumed run)."""
        _remove_files(self.candidates_dir, (".json", ".json.tmp"))


def _refuse_constant(name: str) -> Any:
    raise RecordError(f"{name} is not a number a record may hold")


def _existing_parent(path: str) -> str:
    parent = os.path.dirname(path)
    while not os.path.exists(parent) and parent != os.path.dirname(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise RunDirError(f"out: cannot create {path!r}: {parent!r} is not a directory")
    return parent


def _check_writable(directory: str, out: str) -> None:
    """Create and remove a file in ``directory`` (permission bits alone mislead root)."""
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        why = err.strerror or type(err).__name__
        where = "" if directory == out else f" (in {directory!r})"
        raise RunDirError(f"out: cannot write into {out!r}{where}: {why}") from None


def _check_marker_version(path: str) -> None:
    """A marker written by a newer ncap describes a layout this one does not know."""
    try:
        with open(path) as f:
            version = json.load(f).get("ncap_run_directory")
    except (OSError, ValueError, AttributeError):
        return  # absent or hand-made: the folder is still marked as a run directory
    if isinstance(version, int) and not isinstance(version, bool) and version > RUN_DIR_VERSION:
        raise RunDirError(
            f"out: {os.path.dirname(path)!r} was written by a newer ncap (run directory "
            f"version {version}, this ncap knows {RUN_DIR_VERSION})"
        )


def _lock(path: str, out: str) -> int:
    """An exclusive, non-blocking flock on ``path``; the holder's pid is written into it."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as err:
        raise RunDirError(f"out: cannot create the lock file {path!r}: {err.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        os.close(fd)
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise RunDirError(
                f"out: {out!r} is in use by another ncap select run{who}; wait for it to "
                "finish or choose another --out"
            ) from None
        raise RunDirError(f"out: cannot lock {path!r}: {err.strerror}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd


def _remove_file(path: str) -> None:
    """Remove a regular file or a link (the link itself, never its target); keep anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
        os.remove(path)


def _remove_files(directory: str, suffixes: tuple[str, ...]) -> None:
    """Remove the files and links in ``directory`` whose names end in ``suffixes``."""
    if os.path.islink(directory) or not os.path.isdir(directory):
        return  # check() refuses a linked sub-directory; never list through one
    for name in os.listdir(directory):
        if name.endswith(suffixes):
            _remove_file(os.path.join(directory, name))
