"""The supervisor's claim on its prometheus_client multiprocess directory: checked, locked, then wiped.

``taskiq-monitor worker`` deletes the previous run's value files at start (stale ones would keep adding their
counts). Three ways that went wrong, and what stops them here:

* **A directory that is not only ours.** ``--metrics-dir`` pointed at an application's directory would have lost
  its ``*.db`` files (an SQLite database). The wipe deletes only prometheus_client's own file names
  (:data:`VALUE_FILE`) and our exemplar side files, and a directory holding anything else is refused unless it
  carries the marker file :data:`MARKER_FILE`, which the first start writes.
* **Two supervisors on one directory.** The second start deleted the live files of the first (its counts fell to
  zero). The marker file is ``fcntl``-locked for the supervisor's lifetime; a second ``worker`` or ``serve`` on a
  locked directory is refused. One directory per supervisor.
* **Workers still writing.** A supervisor killed with ``SIGKILL`` releases its lock, but its workers may still be
  running (they stop on their own since parentdeath.py, but finish their tasks first; before, they ran on). Wiping
  their files under them undercounted for good (2000 tasks ran, 984 counted). A start with ``wipe`` is refused while
  a process other than this one still has a value file of the directory mapped (Linux, ``/proc/PID/maps``: exact,
  and immune to a pid reused by an unrelated process; elsewhere nothing is checked).
* **A directory someone else controls.** Planted counter files would be served as our counts:
  :func:`~taskiq_monitor.securedir.ensure_private_dir` accepts only a directory owned by this user that nobody
  else can write, and creates a missing one with mode 0700.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from pathlib import Path

from taskiq_monitor.errors import ConfigError
from taskiq_monitor.securedir import PRIVATE_FILE_MODE, ensure_private_dir

__all__ = [
    "MARKER_FILE",
    "DirectoryClaim",
    "MetricsDirError",
    "claim_directory",
    "is_own_file",
    "live_writers",
    "prepare_directory",
]

MARKER_FILE = "taskiq-monitor.lock"
# prometheus_client's value files: <type>_<pid>.db, and gauge_<mode>_<pid>.db (values.py, MultiProcessValue).
VALUE_FILE = re.compile(r"^(?:counter|histogram|summary|gauge_(?:live)?(?:all|min|max|sum|mostrecent))_\d+\.db$")
_FILE_PID = re.compile(r"_(\d+)\.db$")
# exemplars.py: exemplars_<pid>.json, written through a temporary .exemplars-*.tmp beside it.
SIDE_FILE = re.compile(r"^(?:exemplars_\d+\.json|\.exemplars-\w+\.tmp)$")
_MARKER_TEXT = (
    "This is the prometheus_client multiprocess directory of a taskiq-monitor supervisor (pid {pid}).\n"
    "It is locked while the supervisor runs; its metric files are deleted at every start.\n"
)


class MetricsDirError(ConfigError):
    """The metrics directory cannot be used (a configuration mistake, reported at start-up)."""


def is_own_file(name: str) -> bool:
    """True for the files a run writes into the directory (and may delete at the next start)."""
    return bool(VALUE_FILE.match(name) or SIDE_FILE.match(name)) or name == MARKER_FILE


def live_writers(path: Path) -> list[int]:
    """Pids of the processes other than this one that have a value file of ``path`` mapped: prometheus_client
    mmaps the file of each process that writes (values.py), until that process ends. Linux only ([] elsewhere)."""
    if not os.path.isdir("/proc/self"):
        return []
    directory = (os.path.realpath(path) + os.sep).encode()
    pids = {int(m.group(1)) for e in os.scandir(path) if VALUE_FILE.match(e.name) and (m := _FILE_PID.search(e.name))}
    live = []
    for pid in sorted(pids - {os.getpid()}):
        try:
            with open(f"/proc/{pid}/maps", "rb") as maps:
                mapped = directory in maps.read()
        except OSError:  # gone; or another user's, which cannot write to this private directory
            continue
        if mapped:
            live.append(pid)
    return live


def _private(path: Path) -> Path:
    try:
        return ensure_private_dir(path, what="metrics directory")
    except MetricsDirError:
        raise
    except ConfigError as exc:
        raise MetricsDirError(str(exc)) from None


def prepare_directory(path: Path, *, wipe: bool) -> Path:
    """Create ``path`` if needed (mode 0700), check that only this user controls it, and with ``wipe`` delete the
    previous run's files — prometheus_client's value files and our exemplar side files, nothing else."""
    _private(path)
    if wipe:
        for entry in os.scandir(path):
            if entry.name == MARKER_FILE or not is_own_file(entry.name):
                continue
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise MetricsDirError(f"cannot remove stale metrics file {entry.path}: {exc.strerror}") from None
    return path


class DirectoryClaim:
    """The lock on a metrics directory; held until :meth:`release` (or the process ends)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> DirectoryClaim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock(path: Path) -> int:
    marker = path / MARKER_FILE
    try:
        # Not inherited by the worker command (Python's descriptors are non-inheritable): the lock is the supervisor's.
        fd = os.open(marker, os.O_CREAT | os.O_RDWR, PRIVATE_FILE_MODE)
    except OSError as exc:
        raise MetricsDirError(f"cannot create {marker}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        try:
            holder = os.pread(fd, 200, 0).decode(errors="replace")
        except OSError:
            holder = ""
        finally:
            os.close(fd)
        match = re.search(r"\(pid (\d+)\)", holder)
        who = f" (pid {match.group(1)})" if match else ""
        raise MetricsDirError(
            f"metrics directory {path} is in use by another taskiq-monitor supervisor{who}; "
            "give each supervisor its own --metrics-dir"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, _MARKER_TEXT.format(pid=os.getpid()).encode(), 0)
    return fd


def claim_directory(path: Path, *, wipe: bool) -> DirectoryClaim:
    """Check, lock and (with ``wipe``) clean ``path`` for one supervisor; raises :class:`MetricsDirError`.

    With ``wipe`` a directory is accepted when it is empty, holds only files a run writes, or carries the marker
    file of an earlier start; anything else there means it is not ours, and it is refused before anything is
    deleted. ``serve`` (``wipe=False``) only reads the workers' files, so it accepts any content.
    """
    _private(path)
    if wipe and not (path / MARKER_FILE).exists():
        foreign = sorted(entry.name for entry in os.scandir(path) if not is_own_file(entry.name))
        if foreign:
            shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
            raise MetricsDirError(
                f"metrics directory {path} holds files taskiq-monitor did not write ({shown}); its metric files "
                "are deleted at every start, so give it a directory of its own (a new or empty one)"
            )
    claim = DirectoryClaim(path, _lock(path))
    try:
        writers = live_writers(path) if wipe else []
        if writers:
            shown = ", ".join(map(str, writers[:5])) + (" …" if len(writers) > 5 else "")
            raise MetricsDirError(
                f"metrics directory {path} is still written by running processes (pid {shown}), e.g. the workers of "
                "a supervisor that was killed; start again once they have exited (wiping their files would lose "
                "their counts)"
            )
        prepare_directory(path, wipe=wipe)
    except BaseException:
        claim.release()
        raise
    return claim
