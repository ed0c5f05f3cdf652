"""The files of a training workdir: one run at a time, writes that are never half done, metrics kept consistent.

    WORKDIR/run.lock            who holds the workdir (host, pid, since); locked for the life of a run
    WORKDIR/config.json         the resolved config (replaced atomically)
    WORKDIR/config_changes.jsonl  every change a resume made to it (``--allow-change``)
    WORKDIR/metrics.jsonl       one JSON record per line, each appended with one write
    WORKDIR/metrics_superseded.jsonl  records a resume or a NaN rollback set aside: steps after its checkpoint, torn lines
    WORKDIR/summary.json        the closing summary (replaced atomically)
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import pathlib
import shutil
import socket
import threading
import time
from collections.abc import Callable

from jaxconv.errors import RunFailure, UserError

LOCK = "run.lock"
SUPERSEDED = "metrics_superseded.jsonl"
# How often a lock holder refreshes the lock file's time, and how old it may get before the holder is
# taken for dead: used only on filesystems without flock (where the kernel cannot tell).
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0


class WorkdirError(UserError, ValueError):
    """The workdir cannot be used (not a directory, not writable, held by another run)."""


class WorkdirBusy(WorkdirError):
    """Another run holds the workdir."""


class RunWriteError(RunFailure, RuntimeError):
    """A file of a run could not be written (a full disk, lost permissions, ...); the run stops."""


_REASONS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exceeded",
            errno.EROFS: "the filesystem is read-only", errno.EACCES: "permission denied",
            errno.EIO: "an input/output error (a failing disk?)"}


def write_failure(error: BaseException, where: pathlib.Path) -> str:
    """Why a write failed, in a few words: the errno's meaning (with the free space when the disk is full),
    not the storage library's message of several hundred characters."""
    reason = disk_failure(error, where)
    if reason is not None:
        return reason
    text = str(error)
    first = text.splitlines()[0] if text else type(error).__name__
    return first if len(first) <= 200 else first[:197] + "..."


def disk_failure(error: BaseException, where: pathlib.Path, *, free: bool = True) -> str | None:
    """A full disk, a quota, a read-only filesystem or a refused permission, in a few words (with the space
    free under ``where`` when ``free``); else None."""
    code = getattr(error, "errno", None)
    if code is None:  # Orbax, TensorStore and ArrayRecord wrap the OS error in their own message
        text = str(error)
        for candidate, words in ((errno.ENOSPC, "No space left on device"), (errno.EDQUOT, "Disk quota exceeded"),
                                 (errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied")):
            if words in text:
                code = candidate
                break
    if code not in _REASONS:
        return None
    reason = _REASONS[code]
    if free and code in (errno.ENOSPC, errno.EDQUOT):
        with contextlib.suppress(OSError, StopIteration):
            available = shutil.disk_usage(next(p for p in (where, *where.parents) if p.exists())).free
            reason += f" ({available / 2**20:.1f} MiB free)"
    return reason


def ensure_writable(workdir: pathlib.Path) -> None:
    """Creates the workdir and checks that files can be written there, before any work starts."""
    probe = workdir / f".jaxconv_write_test.{os.getpid()}"
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
    except OSError as e:
        raise WorkdirError(f"workdir {workdir} is not writable: {e.strerror or e}") from None
    finally:  # a full disk lets the file be created but not written: it must not stay
        with contextlib.suppress(OSError):
            probe.unlink()


def atomic_write_text(path: pathlib.Path, text: str) -> None:
    """Writes ``path`` whole or not at all: a temporary file beside it, flushed, then renamed over it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except OSError as e:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise RunWriteError(f"could not write {path}: {write_failure(e, path)}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def append_line(path: pathlib.Path, line: str) -> None:
    """Appends one line with a single write(); RunWriteError when it cannot."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line.rstrip("\n") + "\n").encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise RunWriteError(f"could not append to {path}: {write_failure(e, path)}") from None


# --- one run per workdir -----------------------------------------------------------------------------------


def _holder_text(holder: dict) -> str:
    since = holder.get("since")
    when = datetime.datetime.fromtimestamp(since).strftime("%Y-%m-%d %H:%M:%S") if isinstance(since, (int, float)) else "?"
    processes = holder.get("processes", 1)
    return (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')} since {when}"
            + (f", {processes} processes" if processes and processes > 1 else ""))


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


class RunLock:
    """Holds WORKDIR/run.lock for the life of a run: a second run on the workdir is refused, naming the holder.

    The lock is an flock on the file, so the kernel releases it when its holder dies however it
    dies (SIGKILL included): a lock left by a dead run is simply taken over, with a line saying so.
    On filesystems without flock, the holder's pid (same host) or the file's heartbeat (another
    host: refreshed every 30 s, stale after 5 min) decides. The file names the holder: host, pid,
    since. Only the main process of a multi-process run takes it, on behalf of all.
    """

    def __init__(self, workdir: pathlib.Path, *, processes: int = 1, log: Callable[[str], None] = print):
        self.path = pathlib.Path(workdir) / LOCK
        self.processes = processes
        self.log = log
        self._fd: int | None = None
        self._stop = threading.Event()
        self._heartbeat: threading.Thread | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise WorkdirError(f"workdir {self.path.parent}: {self.path.name} cannot be opened as the run's lock file "
                               f"({e.strerror or e}); move it away") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            flock = True
        except BlockingIOError:
            holder = self._read(fd)
            os.close(fd)
            raise WorkdirBusy(self._busy_message(holder)) from None
        except OSError as e:
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                os.close(fd)
                raise WorkdirError(f"workdir {self.path.parent}: cannot lock {self.path.name}: {e.strerror or e}") from None
            flock = False
        previous = self._read(fd)
        if previous and not flock and self._alive_without_flock(previous):
            os.close(fd)
            raise WorkdirBusy(self._busy_message(previous))
        if previous:
            self.log(f"{self.path}: the run that held this workdir ({_holder_text(previous)}) is no longer running; "
                     f"taking it over")
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.time(), "processes": self.processes}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        self._heartbeat = threading.Thread(target=self._beat, daemon=True, name="jaxconv-lock-heartbeat")
        self._heartbeat.start()

    def release(self) -> None:
        if self._fd is None:
            return
        self._stop.set()
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)  # empty: released cleanly (the file stays, so no one locks a deleted inode)
        os.close(self._fd)  # releases the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):
                os.utime(self.path)

    @staticmethod
    def _read(fd: int) -> dict | None:
        """The holder named in the file; None when it is empty (released cleanly)."""
        try:
            text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            if not text:
                return None
            holder = json.loads(text)
        except (OSError, ValueError):
            holder = None
        return holder if isinstance(holder, dict) else {"host": "?", "pid": "?"}

    def _alive_without_flock(self, holder: dict) -> bool:
        if holder.get("host") == socket.gethostname():
            return _pid_alive(holder.get("pid")) and holder.get("pid") != os.getpid()
        try:
            return time.time() - self.path.stat().st_mtime < STALE_AFTER_S
        except OSError:
            return False

    def _busy_message(self, holder: dict | None) -> str:
        held = _holder_text(holder) if holder else "a process that has not written its name yet"
        return (f"workdir {self.path.parent} is in use by another run ({held}); wait for it to finish, stop it, "
                f"or give this run another --workdir")


# --- metrics.jsonl -------------------------------------------------------------------------------------------


def read_records(path: pathlib.Path) -> tuple[list[dict], list[tuple[int, str]]]:
    """The JSON records of a .jsonl file, and the (line number, text) of lines that are not one."""
    records, bad = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                bad.append((number, line.rstrip("\n")))
                continue
            if isinstance(record, dict):
                records.append(record)
            else:
                bad.append((number, line.rstrip("\n")))
    return records, bad


def _set_aside(workdir: pathlib.Path, lines: list[str]) -> pathlib.Path:
    target = workdir / SUPERSEDED
    append_line(target, "".join(line if line.endswith("\n") else line + "\n" for line in lines))
    return target


def settle_metrics(workdir: pathlib.Path, step: int, log: Callable[[str], None] = print) -> None:
    """Makes metrics.jsonl hold each step once as a run (re)starts at ``step``.

    A resumed run redoes the steps after its checkpoint, so their records from the session that
    died are moved to metrics_superseded.jsonl (nothing is deleted), as are lines that are not
    JSON (the torn last line of a run killed while writing it). Starting over (``step`` 0) moves
    every record there.
    """
    path = workdir / "metrics.jsonl"
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8", errors="replace")
    keep, drop, torn = [], [], 0
    for line in text.splitlines(keepends=True):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            ok = isinstance(record, dict)
        except json.JSONDecodeError:
            ok = False
        if not ok:
            torn += 1
            drop.append(line)
        elif isinstance(record.get("step"), int) and record["step"] > step:
            drop.append(line)
        else:
            keep.append(line if line.endswith("\n") else line + "\n")
    if not drop:
        return
    target = _set_aside(workdir, drop)
    atomic_write_text(path, "".join(keep))
    later = len(drop) - torn
    parts = []
    if later:
        parts.append(f"{later} record(s) of steps after {step} (this run redoes them)" if step else
                     f"all {later} record(s) of the earlier attempt")
    if torn:
        parts.append(f"{torn} line(s) that are not JSON (cut short by a crash)")
    log(f"metrics.jsonl: moved {'; and '.join(parts)} to {target}")


def best_rank(top1: float, step: int) -> tuple[float, int]:
    """What makes an evaluation the best: the highest top-1 and, of equal ones, the latest step. Orbax's
    ``best_step`` ranks so (a stable sort of the steps by top-1); the checkpoints kept, and the best
    evaluation ``summary.json`` and ``report`` name, follow it, so that the step they name is kept."""
    return float(top1), int(step)


class MetricsFile:
    """Appends records to WORKDIR/metrics.jsonl, each with a single write() on an O_APPEND file: a
    record is on disk whole, or (a crash in the middle of the system call) torn and set aside later."""

    def __init__(self, workdir: pathlib.Path):
        self.path = workdir / "metrics.jsonl"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(self, record: dict) -> None:
        try:
            os.write(self._fd, (json.dumps(record) + "\n").encode())
        except OSError as e:
            raise RunWriteError(f"could not append to {self.path}: {write_failure(e, self.path)}") from None

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


@contextlib.contextmanager
def holding(workdir: pathlib.Path, log: Callable[[str], None]):
    """The workdir, locked for this run (by process 0 for all); a second run on it is refused.

    A workdir this call created is removed again when the run fails before writing anything to
    it, so that a mistake caught late leaves nothing behind.
    """
    import jax
    import numpy as np

    created = not workdir.exists()
    is_main = jax.process_index() == 0
    lock, error = None, None
    if is_main:
        lock = RunLock(workdir, processes=jax.process_count(), log=log)
        try:
            ensure_writable(workdir)
            lock.acquire()
        except WorkdirError as e:
            lock, error = None, e
    if jax.process_count() > 1:  # every process learns whether process 0 holds the workdir
        from jax.experimental import multihost_utils

        held = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
        if not held and error is None:
            error = WorkdirBusy(f"workdir {workdir}: process 0 could not lock it (see its output)")
    if error is not None:
        if created and is_main:  # e.g. a full disk that let the folder be made but nothing in it
            with contextlib.suppress(OSError):
                workdir.rmdir()  # only if empty: never anything of someone else's
        raise error
    try:
        yield
    except BaseException:
        if lock is not None:
            lock.release()
            lock = None
            if created and holds_nothing(workdir):
                shutil.rmtree(workdir, ignore_errors=True)
        raise
    finally:
        if lock is not None:
            lock.release()


def holds_nothing(workdir: pathlib.Path) -> bool:
    """Only the lock and an empty checkpoints/ folder: what a run that failed before its first step leaves."""
    for path in workdir.iterdir():
        if path.name == LOCK or (path.name == "checkpoints" and path.is_dir() and not any(path.iterdir())):
            continue
        return False
    return True


def has_checkpoints(workdir: pathlib.Path) -> bool:
    directory = workdir / "checkpoints"
    if directory.exists() and not directory.is_dir():
        raise WorkdirError(f"workdir {workdir}: checkpoints is a file, not the run's checkpoint folder; move it away")
    return directory.is_dir() and any(p.name.isdigit() for p in directory.iterdir())


def read_summary(workdir: pathlib.Path) -> dict | None:
    """WORKDIR/summary.json, or None where it is missing or not a JSON object. The paths it names are where
    the run is now: a workdir copied or moved since keeps the summary that names the old place."""
    try:
        summary = json.loads((workdir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict):
        return None
    here = workdir.absolute()
    return summary | {"workdir": str(here), "checkpoints": str(here / "checkpoints"),
                      "metrics": str(here / "metrics.jsonl")}
