"""The on-disk spool: where batches wait while Loki is down, slow or rejecting, and across restarts.

The spool is a directory of gzip push bodies, one file per batch, named ``<created_ns>-<seq>-<records>.<owner>.gz``.
Each process owns its files through ``<owner>.lock``, held with ``fcntl.flock`` for its lifetime. On start (and
every minute) a process takes over the files of owners whose lock is free — a process that died, was ``kill
-9``-ed or exited during an outage — by renaming them, so two live processes never replay the same file. Files are
replayed oldest first; identical entries re-sent after a timeout are de-duplicated by Loki (same stream, timestamp
and line).

A file is written to ``.tmp-<name>.<owner>`` and renamed into place, so a reader sees a whole batch or none. The
cap (``loki_spool_max_bytes``) counts the files of all processes together. A file that vanishes (a tmp cleaner) is
counted as lost records, which the sink reports as dropped.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import tempfile
import threading
import time
import uuid
from bisect import insort
from pathlib import Path

from taskiq_monitor.securedir import ensure_private_dir, private_opener
from taskiq_monitor.sinks.loki.format import Batch

logger = logging.getLogger(__name__)

ADOPT_INTERVAL_SECONDS = 60.0


def default_spool_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"taskiq-monitor-loki-spool-{os.getuid()}"


class Spool:
    """Per-process files of batches in a shared directory; see the module docstring for the layout."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.owner = f"{os.getpid()}x{uuid.uuid4().hex[:8]}"
        self.files: list[tuple[tuple[int, int], Path, int, int]] = []  # (key, path, records, bytes), sorted
        self.own_bytes = 0
        self.lost_records = 0
        self._lock = threading.RLock()
        self._lock_fd: int | None = None
        self._others_bytes = 0
        self._others_checked = 0.0
        self._last_adopt = 0.0

    def open(self, *, adopt: bool = True) -> None:
        # Private (issue 14 #4): a directory another user controls could feed us batches to ship as our own.
        ensure_private_dir(self.directory, what="Loki spool directory")
        fd = os.open(self.directory / f"{self.owner}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._lock_fd = fd
        if adopt:
            self.adopt_orphans()

    def close(self) -> None:
        """Release the lock; remaining files stay and are adopted by the next process (lock file goes with them)."""
        with self._lock:
            if self._lock_fd is not None:
                if not self.files:
                    with contextlib.suppress(OSError):
                        (self.directory / f"{self.owner}.lock").unlink()
                with contextlib.suppress(OSError):
                    os.close(self._lock_fd)
                self._lock_fd = None

    def forget_after_fork(self) -> None:
        # The child's copy of the lock fd shares the parent's lock; closing it leaves the parent's lock intact.
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._lock_fd)
            self._lock_fd = None

    @staticmethod
    def _parse(name: str) -> tuple[tuple[int, int], int, str] | None:
        # <created_ns>-<seq>-<records>.<owner>.gz
        try:
            stem, owner, ext = name.split(".")
            created, seq, records = stem.split("-")
            if ext != "gz":
                return None
            return (int(created), int(seq)), int(records), owner
        except ValueError:
            return None

    def adopt_orphans(self) -> list[Path]:
        """Take over the batch files of owners whose lock is free (dead processes)."""
        adopted: list[Path] = []
        with self._lock:
            self._last_adopt = time.monotonic()
            try:
                entries = list(os.scandir(self.directory))
            except OSError:
                return adopted
            owners_files: dict[str, list[os.DirEntry[str]]] = {}
            locks: dict[str, str] = {}
            for entry in entries:
                if entry.name.endswith(".lock"):
                    locks[entry.name[: -len(".lock")]] = entry.path
                elif entry.name.endswith(".gz"):
                    parsed = self._parse(entry.name)
                    if parsed is not None and parsed[2] != self.owner:
                        owners_files.setdefault(parsed[2], []).append(entry)
                elif entry.name.startswith(".tmp-"):
                    owner = entry.name.split(".")[-1]
                    if owner != self.owner and owner not in locks:
                        owners_files.setdefault(owner, [])
            for owner, lock_path in locks.items():
                if owner == self.owner:
                    continue
                fd = self._try_lock(lock_path)
                if fd is None:
                    owners_files.pop(owner, None)  # alive
                    continue
                try:
                    adopted += self._take(owners_files.pop(owner, []))
                    for tmp in self.directory.glob(f".tmp-*.{owner}"):
                        with contextlib.suppress(OSError):
                            tmp.unlink()
                    with contextlib.suppress(OSError):
                        os.unlink(lock_path)
                finally:
                    os.close(fd)
            # Files whose owner has no lock file at all: the owner died between writing and locking, or an adopter
            # died mid-way; nobody alive owns them.
            for files in owners_files.values():
                adopted += self._take(files)
        if adopted:
            logger.info("taskiq-monitor: adopted %d spooled Loki batches of stopped processes", len(adopted))
        return adopted

    @staticmethod
    def _try_lock(path: str) -> int | None:
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # The lock file may have been unlinked (and its files adopted) by another process meanwhile.
            if os.fstat(fd).st_ino != os.stat(path).st_ino:
                raise OSError("lock file replaced")
        except OSError:
            os.close(fd)
            return None
        return fd

    def _take(self, files: list[os.DirEntry[str]]) -> list[Path]:
        taken: list[Path] = []
        for entry in files:
            parsed = self._parse(entry.name)
            if parsed is None:
                continue
            key, records, _ = parsed
            target = self.directory / f"{key[0]:020d}-{key[1]:08d}-{records}.{self.owner}.gz"
            try:
                os.rename(entry.path, target)
                size = target.stat().st_size
            except OSError:
                continue  # another process took it first
            insort(self.files, (key, target, records, size))
            self.own_bytes += size
            taken.append(target)
        return taken

    def maybe_adopt(self) -> None:
        if time.monotonic() - self._last_adopt >= ADOPT_INTERVAL_SECONDS:
            self.adopt_orphans()

    def _total_bytes(self) -> int:
        now = time.monotonic()
        if now - self._others_checked > 1.0:
            total = 0
            with contextlib.suppress(OSError):
                for entry in os.scandir(self.directory):
                    if entry.name.endswith(".gz") and self.owner not in entry.name:
                        with contextlib.suppress(OSError):
                            total += entry.stat().st_size
            self._others_bytes = total
            self._others_checked = now
        return self.own_bytes + self._others_bytes

    def write(self, batch: Batch) -> bool:
        """Persist ``batch``; False when the cap would be exceeded (the caller counts the records as dropped).

        Raises ``OSError`` when the disk refuses (full, read-only…); the caller counts the batch as dropped. A spool
        directory removed while running (a tmp cleaner) is recreated, with this process's lock, and the write
        retried once.
        """
        with self._lock:
            if self._total_bytes() + len(batch.body) > self.max_bytes:
                return False
            try:
                self._write_file(batch)
            except FileNotFoundError:
                self._relock()
                self._write_file(batch)
            return True

    def _write_file(self, batch: Batch) -> None:
        name = f"{batch.key[0]:020d}-{batch.key[1]:08d}-{batch.records}.{self.owner}.gz"
        target = self.directory / name
        tmp = self.directory / f".tmp-{name[:-3]}.{self.owner}"
        try:
            with open(tmp, "wb", opener=private_opener) as out:  # 0600: records carry task parameters
                out.write(batch.body)
            os.replace(tmp, target)  # atomic: a reader sees a whole batch or none
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        insort(self.files, (batch.key, target, batch.records, len(batch.body)))
        self.own_bytes += len(batch.body)

    def _relock(self) -> None:
        """The directory is gone: recreate it and our lock file (else other processes would adopt our files)."""
        ensure_private_dir(self.directory, what="Loki spool directory")
        fd = os.open(self.directory / f"{self.owner}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise
        old, self._lock_fd = self._lock_fd, fd
        if old is not None:
            with contextlib.suppress(OSError):
                os.close(old)
        gone = [item for item in self.files if not item[1].exists()]
        for item in gone:
            self._forget(item)

    def _forget(self, item: tuple[tuple[int, int], Path, int, int]) -> None:
        """A file of ours vanished from disk: its records are lost (counted through :meth:`take_lost`)."""
        with contextlib.suppress(ValueError):
            self.files.remove(item)
            self.own_bytes -= item[3]
            self.lost_records += item[2]

    def take_lost(self) -> int:
        """Records of spool files that vanished since the last call (deleted by someone else)."""
        with self._lock:
            lost, self.lost_records = self.lost_records, 0
            return lost

    def head(self) -> Batch | None:
        with self._lock:
            while self.files:
                item = self.files[0]
                key, path, records, _ = item
                try:
                    body = path.read_bytes()
                except OSError:
                    self._forget(item)
                    continue
                return Batch(key, records, body, path=path)
            return None

    def head_key(self) -> tuple[int, int] | None:
        with self._lock:
            return self.files[0][0] if self.files else None

    def remove(self, path: Path) -> None:
        with self._lock:
            for index, item in enumerate(self.files):
                if item[1] == path:
                    self.files.pop(index)
                    self.own_bytes -= item[3]
                    break
            with contextlib.suppress(OSError):
                path.unlink()

    def __len__(self) -> int:
        return len(self.files)
