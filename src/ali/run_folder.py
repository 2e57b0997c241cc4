"""A run folder's own files besides the checkpoints: ``config.json`` (what the run is, and how
it ran), ``metrics.jsonl`` (one JSON record per logging interval) and ``train.lock`` (held by the
training writing the folder, :class:`RunLock`).

``metrics.jsonl`` never goes back in steps: when a run resumes (after a crash, a kill or an
interruption, the steps logged after its checkpoint were never saved) or rolls back, the records
after the step it continues from are dropped before new ones are appended, so each step is
logged once, by the run that the checkpoints hold.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Self

try:
    import fcntl
except ImportError:         # Windows: an exclusively created file, its pid checked instead
    fcntl = None  # type: ignore[assignment]

from .checkpoint import atomic_write, pid_alive, remove_stale_temporaries
from .errors import CheckpointError, one_line

METRICS = "metrics.jsonl"
CONFIG = "config.json"
LOCK = "train.lock"


class RunLock:
    """The claim of one training on its run folder: ``run_dir/train.lock``, holding the
    owner's pid, host and start time, locked with ``flock`` for as long as the training runs.

    The operating system drops an ``flock`` when its process dies (a kill, a crash, a lost
    session), so a lock file left by a dead training is stale by construction and the next
    training takes it over; a second training while the first runs gets a one-line
    :class:`~ali.errors.CheckpointError` naming the owner, and has written nothing. Where
    ``fcntl`` is missing (Windows) the file is created exclusively and a lock of a dead pid
    on this host is taken over.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK
        self.fd: int | None = None
        self.created = False
        """Whether acquiring made the folder (left empty by a training that failed at once,
        it is removed again)."""

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _owner(self) -> str:
        try:
            info = json.loads(self.path.read_text())
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
            return f"pid {info['pid']} on {info['host']}, since {since}"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"

    def _busy(self) -> CheckpointError:
        return CheckpointError(
            f"{self.path.parent} is in use by a training ({self._owner()}; {self.path}); wait "
            "for it to finish, stop it, or choose another --out")

    def acquire(self) -> None:
        """Take the lock, or raise :class:`~ali.errors.CheckpointError` when a live training
        holds it."""
        folder = self.path.parent
        if folder.exists() and not folder.is_dir():
            raise CheckpointError(f"{folder} exists and is not a folder; choose another --out")
        try:
            self.created = not folder.exists()
            folder.mkdir(parents=True, exist_ok=True)
            fd = self._lock_fcntl() if fcntl is not None else self._lock_exclusive()
            me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}
            os.ftruncate(fd, 0)
            os.write(fd, (json.dumps(me) + "\n").encode())
        except OSError as e:
            raise CheckpointError(f"cannot use run folder {folder}: {one_line(e)}") from None
        self.fd = fd

    def _lock_fcntl(self) -> int:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._busy() from None
            # The holder before us may have removed the file between our open and our lock:
            # then we hold a lock on a file no one else will see; open it again.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)

    def _lock_exclusive(self) -> int:
        while True:
            try:
                return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    info = json.loads(self.path.read_text())
                    stale = info["host"] == socket.gethostname() and not pid_alive(int(info["pid"]))
                except (OSError, ValueError, KeyError, TypeError):
                    stale = False
                if not stale:
                    raise self._busy() from None
                self.path.unlink(missing_ok=True)

    def check(self) -> None:
        """Raise the one-line error of :meth:`acquire` when a live training holds the lock;
        take nothing (what ``ali train`` asks first, so that a busy folder is reported as
        such rather than as a finished run)."""
        if not self.path.is_file():
            return
        if fcntl is None:
            try:
                info = json.loads(self.path.read_text())
                live = info["host"] != socket.gethostname() or pid_alive(int(info["pid"]))
            except (OSError, ValueError, KeyError, TypeError):
                live = True
            if live:
                raise self._busy()
            return
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return                      # removed meanwhile: nobody holds it
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._busy() from None
        finally:
            os.close(fd)

    def release(self) -> None:
        """Remove the lock file and drop the lock (removed first: a training waiting to take
        it over then finds no file, or a fresh one)."""
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass        # the lock still goes with the descriptor
        os.close(self.fd)
        self.fd = None
        if self.created:
            with contextlib.suppress(OSError):     # not empty: the run's files stay
                self.path.parent.rmdir()


def make_output_folder(folder: Path) -> Path:
    """Create ``folder``, a command's ``--out``, before any work goes into it, or a one-line
    :class:`CheckpointError`: a command that trains for hours and writes its results at the
    end would otherwise find out then that it cannot."""
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"{folder} exists and is not a folder; choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot use --out {folder}: {one_line(e)}") from None
    return folder


def prepare_run_folder(run_dir: Path, record: dict[str, Any]) -> None:
    """Create ``run_dir``, write its ``config.json`` (``record``) and remove the temporary
    checkpoint files of killed writers; a one-line error when the folder cannot be used."""
    if run_dir.exists() and not run_dir.is_dir():
        raise CheckpointError(f"{run_dir} exists and is not a folder; choose another --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG).write_text(json.dumps(record, indent=2) + "\n")
        remove_stale_temporaries(run_dir / "checkpoints")
    except OSError as e:
        raise CheckpointError(f"cannot use run folder {run_dir}: {one_line(e)}") from None


class MetricsFile:
    """``run_dir/metrics.jsonl``, opened for appending after the records of steps up to
    ``start`` (later ones are dropped: see the module's docstring)."""

    def __init__(self, run_dir: Path, start: int) -> None:
        self.path = run_dir / METRICS
        self.file = None
        self.truncate_after(start)

    def truncate_after(self, step: int) -> None:
        """Drop the records of steps after ``step`` (and any torn last line), atomically."""
        if self.file is not None:
            self.file.close()
            self.file = None
        try:
            if self.path.is_file():
                lines = self.path.read_text().splitlines()
                keep = [line for line in lines if _step_of(line) is not None
                        and _step_of(line) <= step]
                if keep != lines:
                    text = "".join(line + "\n" for line in keep).encode()
                    atomic_write(self.path, lambda f: f.write(text))
            self.file = open(self.path, "a")
        except (OSError, CheckpointError) as e:
            raise CheckpointError(f"cannot use {self.path}: {one_line(e)}") from None

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` (flushed: a reader sees whole lines)."""
        assert self.file is not None
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as e:  # a full disk: the checkpoints on disk are still whole
            raise CheckpointError(f"cannot write {self.file.name} at step {record['step']}: "
                                  f"{e.strerror or e}") from None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _step_of(line: str) -> int | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) else None
