"""Ship task events to Loki without losing them when Loki is slow, down or rejecting.

Enabled by ``TASKIQ_MONITOR_LOKI_URL=http://loki:3100`` (see ``settings.py``, section "loki"). Every record is one
JSON line (``events.to_record``) in a stream labelled ``service_name``, ``task_name``, ``status`` (and ``env``
when configured); ``task_id`` and ``trace_id`` travel as structured metadata, never as labels. Query it with::

    {service_name="taskiq", task_name="score_message_task", status="failed"} | json

How a record travels::

    emit() ──append──▶ queue ──collector thread──▶ batch ──▶ outbox ──sender thread──▶ POST /loki/api/v1/push
      (hot path)      (bounded)  (serialize, gzip)   │                 │  2xx: shipped
                                                     ▼                 │  400: split, drop only the bad record
                                               on-disk spool ◀─────────┘  5xx/429/refused/timeout: retry, then spool

* The task's hot path only appends to an in-memory deque. Serialisation, gzip and HTTP run in two daemon threads,
  so no worker event loop ever waits for Loki and it works the same in any process (web app, worker child,
  scheduler). A worker child's threads start on ``startup`` or on the first event, and again after a fork.
  Starting them is cheap — the sender thread opens the spool and the HTTP client — so no event loop does start-up
  I/O. An error inside a thread's loop (a full disk, a removed spool directory, a corrupt spool file) counts the
  batch concerned as dropped unless it can be kept, is logged once, and the loop goes on; a thread that ends
  anyway is restarted by the next ``emit()``. Hooks (at-fork, ``atexit``) are registered once per process.
* The collector never does network I/O, so a hung Loki cannot make the queue grow: while the sender is busy, down
  or has a backlog, new batches go to the spool. Memory is bounded by ``loki_queue_max_records`` plus a few
  batches.
* The spool is a directory of gzip push bodies, one file per batch, named
  ``<created_ns>-<seq>-<records>.<owner>.gz``. Each process owns its files through ``<owner>.lock``, held with
  ``fcntl.flock`` for its lifetime. On start (and every minute) a process takes over the files of owners whose
  lock is free — a process that died, was ``kill -9``-ed or exited during an outage — by renaming them, so two
  live processes never replay the same file. Files are replayed oldest first; identical entries re-sent after a
  timeout are de-duplicated by Loki (same stream, timestamp and line).
* Shutdown (``close()``, awaited in the middleware's shutdown hook — which taskiq runs in every worker child on
  SIGTERM/SIGINT before the child leaves via ``os._exit``) flushes for at most ``loki_flush_timeout_seconds``;
  then it aborts a push still in flight (a hanging Loki) and writes everything left in memory to the spool itself,
  within ``ABORT_GRACE_SECONDS`` more — 3 s + 0.5 s by default, inside taskiq's 5 s ``shutdown_timeout``. An
  ``atexit`` hook does the same for processes that never call ``shutdown``.
* Records are dropped — and counted in ``taskiq_monitor_log_records_total{result="dropped"}`` — only when the spool
  cap (``loki_spool_max_bytes``, all processes together) is reached, when the spool cannot be written (disk
  full, read-only) or a spool file is deleted or corrupt, when Loki rejects that very record with 400, or when the
  in-memory queue (``loki_queue_max_records``) is full because the collector thread cannot keep up with ``emit``
  (serialisation and spool writes slower than the event rate, e.g. a stalled disk). ``emit`` never waits, so it
  cannot spill to disk itself.

Why not ``loki-logger-handler``: measured (1.1.2, see FIELD-NOTES) it has no HTTP timeout (a hung Loki blocks its
flush thread forever while its unbounded queue grows by ~78 MiB per 100k records), drops the whole batch on any
error (0 of 1000 records after a 3 s 503 outage; no retry, no spool, no 400 isolation), flushes only at ``atexit``
(lost on SIGTERM and on ``os._exit``, which is how taskiq worker children exit), keys streams by joined label
values (records get the wrong labels), silently drops records with a non-string label value, and imports
``requests`` without declaring it. Its payload shape is fine; its transport is what we need, so this module is a
small transport of our own on ``httpx`` (already a dependency).
"""

from __future__ import annotations

import atexit
import contextlib
import email.utils
import fcntl
import json
import logging
import os
import random
import socket
import tempfile
import threading
import time
import uuid
import weakref
import zlib
from bisect import insort
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from prometheus_client import CollectorRegistry

from taskiq_monitor.errors import ConfigError
from taskiq_monitor.events import EventSink, TaskEvent, record_json
from taskiq_monitor.logs import WarnOnce
from taskiq_monitor.metrics import LOG_DROPPED, LOG_SHIPPED, LOG_SPOOLED, OTHER, LogShippingMetrics
from taskiq_monitor.redaction import Redactor
from taskiq_monitor.securedir import ensure_private_dir, private_opener
from taskiq_monitor.settings import Settings

logger = logging.getLogger(__name__)

PUSH_PATH = "/loki/api/v1/push"
GZIP_LEVEL = 1  # push bodies are JSON: level 1 already compresses ~10x; higher levels cost CPU for little gain
ADOPT_INTERVAL_SECONDS = 60.0
MAX_STREAM_TASK_NAMES = 200  # task_name label values per process before folding into "other" (the line keeps it)

# (labels, timestamp ns as string, line, structured metadata)
PushEntry = tuple[tuple[tuple[str, str], ...], str, str, dict[str, str]]


def default_spool_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"taskiq-monitor-loki-spool-{os.getuid()}"


def encode_push(entries: Sequence[PushEntry]) -> bytes:
    """The JSON push body (uncompressed) of ``entries``, grouped into streams by their label set."""
    streams: dict[tuple[tuple[str, str], ...], list[list[Any]]] = {}
    for labels, ts, line, metadata in entries:
        values = streams.get(labels)
        if values is None:
            values = streams[labels] = []
        values.append([ts, line, metadata] if metadata else [ts, line])
    body = {"streams": [{"stream": dict(labels), "values": values} for labels, values in streams.items()]}
    return orjson.dumps(body)  # compact UTF-8 JSON; ~4x faster than json.dumps on the lines it escapes


def decode_push(body: bytes) -> list[PushEntry]:
    """Entries of a (gzip) push body — used to split a spooled batch that Loki rejected with 400."""
    if body[:2] == b"\x1f\x8b":
        body = zlib.decompress(body, wbits=31)
    entries: list[PushEntry] = []
    for stream in json.loads(body)["streams"]:
        labels = tuple(stream["stream"].items())
        for value in stream["values"]:
            entries.append((labels, value[0], value[1], value[2] if len(value) > 2 else {}))
    entries.sort(key=lambda e: int(e[1]))
    return entries


def gzip_body(raw: bytes) -> bytes:
    return zlib.compress(raw, GZIP_LEVEL, wbits=31)


@dataclass(order=True, slots=True)
class Batch:
    """A push body ready to send. ``key`` orders batches (and spool files) by creation."""

    key: tuple[int, int]
    records: int = field(compare=False)
    body: bytes = field(compare=False)  # gzip
    entries: list[PushEntry] | None = field(default=None, compare=False)  # kept in memory for a 400 split
    path: Path | None = field(default=None, compare=False)  # set when the batch lives in the spool


# -- spool ---------------------------------------------------------------------------------------------------------
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


# -- the sink ------------------------------------------------------------------------------------------------------
class _Outcome:
    OK = "ok"
    BAD = "bad"  # 400/413/422: this payload will never be accepted as a whole
    RETRY = "retry"


class _Run:
    """One start of the shipper threads. ``close()`` ends a run; a later ``emit()`` starts a new one, so a thread of
    an old run that is still stuck (e.g. in a connect) never resumes work as if nothing happened."""

    __slots__ = ("abandon", "collector_done", "deadline", "ready", "stop")

    def __init__(self) -> None:
        self.stop = threading.Event()  # close() asked the threads to finish
        self.deadline: float | None = None  # when the flush budget ends
        self.abandon = False  # the budget is spent: close() saves what is in memory itself (set under _cond)
        self.ready = threading.Event()  # the sender has opened the spool and the HTTP client
        self.collector_done = threading.Event()


class LokiSink(EventSink):
    """Event sink pushing to Loki; see the module docstring. ``emit`` never blocks and never raises."""

    OUTBOX_MAX = 4  # batches waiting in memory for the sender; beyond it, batches are spooled
    ABORT_GRACE_SECONDS = 0.5  # after the flush budget: abort the in-flight push, spool the rest, let threads end
    ERROR_PAUSE_SECONDS = 0.1  # after an unexpected error in a shipper thread, before its loop continues

    def __init__(
        self,
        settings: Settings,
        *,
        registry: CollectorRegistry | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not settings.loki_url:
            raise ValueError("LokiSink needs settings.loki_url")
        self.settings = settings
        self.url = settings.loki_url + PUSH_PATH
        self.metrics = LogShippingMetrics(registry)
        self._transport = transport
        self._base_labels: tuple[tuple[str, str], ...] = (("service_name", settings.service_name),)
        self._env = settings.env
        self._queue: deque[TaskEvent] = deque()
        self._queue_max = settings.loki_queue_max_records
        self._overflow = 0  # records refused by a full queue, not yet counted as dropped (under _overflow_lock)
        self._overflow_lock = threading.Lock()
        self._outbox: deque[Batch] = deque()
        self._cond = threading.Condition()
        self._wake_collector = threading.Event()
        self._run = _Run()
        self._collector_thread: threading.Thread | None = None
        self._sender_thread: threading.Thread | None = None
        self._running = False  # emit's one check: False before start, after close() and when a thread died
        self._ended: weakref.WeakSet[threading.Thread] = weakref.WeakSet()  # threads that died (still alive briefly)
        self._start_lock = threading.Lock()
        self._spool: Spool | None = None
        self._client: httpx.Client | None = None
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()  # to abort a hanging push on close
        self._carry: tuple[PushEntry, int] | None = None  # collector: the record that did not fit the last batch
        self._building: list[PushEntry] = []  # collector: the batch being built (counted as dropped on an error)
        self._sending: Batch | None = None  # sender: the batch being pushed
        self._seq = 0
        self._down = False
        self._next_probe = 0.0
        self._backoff_step = 0
        self._task_names: set[str] = set()
        self._warn = WarnOnce(logger)
        self._redactor = Redactor(settings.redact_keys)  # only to keep URLs out of our own log messages
        self._pid = os.getpid()
        _register(self)

    # -- EventSink -------------------------------------------------------------------------------------------------
    def emit(self, event: TaskEvent) -> None:
        try:
            if not self._running:
                self._start_threads()  # cheap: spool and HTTP client are opened by the sender thread
            queue = self._queue
            if len(queue) >= self._queue_max:
                with self._overflow_lock:  # only on this path; the collector counts it as dropped
                    self._overflow += 1
                return
            queue.append(event)
            if len(queue) >= self.settings.loki_batch_max_records:
                self._wake_collector.set()
        except Exception:  # pragma: no cover - emit must never raise
            logger.debug("taskiq-monitor: loki emit failed", exc_info=True)

    async def start(self) -> None:
        self._start_threads()

    async def close(self) -> None:
        import asyncio

        await asyncio.get_running_loop().run_in_executor(None, self.flush_sync)

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def _start_threads(self) -> None:
        """Start the threads that are not running (all of them, or one that died); no I/O here."""
        with self._start_lock:
            if self._running:
                return
            run = self._run
            if run.stop.is_set():  # closed before: a new run
                run = self._run = _Run()
                self._collector_thread = self._sender_thread = None
            collector, sender = self._collector_thread, self._sender_thread
            if collector is None or not collector.is_alive() or collector in self._ended:
                if collector is not None:  # died holding a batch in the making
                    self._count(LOG_DROPPED, len(self._building) + (self._carry is not None))
                self._carry, self._building = None, []
                self._collector_thread = self._thread(self._collector, run, "collector")
            if sender is None or not sender.is_alive() or sender in self._ended:
                self._sending = None  # its batch is still in the outbox or the spool
                self._sender_thread = self._thread(self._sender, run, "sender")
            self._running = True

    def _thread(self, target: Any, run: _Run, role: str) -> threading.Thread:
        def main() -> None:
            try:
                target(run)
            finally:
                if not run.stop.is_set():
                    self._ended.add(threading.current_thread())
                    self._running = False  # it died (a BaseException): the next emit() restarts it
                    logger.warning("taskiq-monitor: Loki %s thread stopped; restarting on the next event", role)

        thread = threading.Thread(target=main, name=f"taskiq-monitor-loki-{role}", daemon=True)
        thread.start()
        return thread

    def flush_sync(self, timeout: float | None = None) -> None:
        """Ship what is queued within the flush timeout, spool the rest, stop the threads (idempotent).

        Returns within the budget plus ``ABORT_GRACE_SECONDS`` even when Loki hangs: when the budget is spent, the
        in-flight push is aborted and everything still in memory is written to the spool here.
        """
        run = self._run
        threads = [t for t in (self._collector_thread, self._sender_thread) if t is not None]
        if not threads or os.getpid() != self._pid:
            return
        budget = self.settings.loki_flush_timeout_seconds if timeout is None else timeout
        run.deadline = time.monotonic() + budget
        run.stop.set()
        self._wake_collector.set()
        with self._cond:
            self._cond.notify_all()
        for thread in threads:
            thread.join(max(0.0, run.deadline - time.monotonic()))
        if any(t.is_alive() for t in threads):
            self._abandon(run)
        self._collector_thread = self._sender_thread = None
        self._close_client()
        self._count_overflow()
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        self._running = False
        self._update_gauges()

    def _abandon(self, run: _Run) -> None:
        """Out of time (Loki hangs or is slow): save everything in memory to the spool now."""
        grace_end = time.monotonic() + self.ABORT_GRACE_SECONDS
        with self._cond:
            run.abandon = True  # from now on the collector spools its batches instead of queueing them
            self._cond.notify_all()
        self._close_client()  # wakes a push blocked in a read; its batch is in the outbox and spooled below
        self._spool_outbox()
        collector = self._collector_thread
        if collector is not None:
            collector.join(max(0.0, grace_end - time.monotonic()))
            if collector.is_alive():  # stuck (slow disk?): take the queue without it
                self._spool_queue()
        self._spool_outbox()
        if self._sender_thread is not None:
            self._sender_thread.join(max(0.0, grace_end - time.monotonic()))

    def _close_client(self) -> None:
        # Shutting the sockets down wakes a thread blocked on them (closing alone does not); then the pool closes.
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def _after_fork(self) -> None:
        # Threads do not survive fork; records queued by the parent are the parent's to ship.
        self._collector_thread = self._sender_thread = None
        self._running = False
        self._queue.clear()
        self._outbox.clear()
        self._cond = threading.Condition()
        self._start_lock = threading.Lock()
        self._overflow_lock = threading.Lock()
        self._overflow = 0
        self._run = _Run()
        self._wake_collector = threading.Event()
        self._client = None  # the parent's connections: dropped, never used or shut down here
        self._sockets = weakref.WeakSet()
        self._carry, self._building, self._sending = None, [], None
        if self._spool is not None:
            self._spool.forget_after_fork()
            self._spool = None
        self._pid = os.getpid()

    def _setup(self) -> None:
        """Open the spool and the HTTP client (in the sender thread, never on the caller's event loop)."""
        if self._spool is None:
            spool = Spool(self.settings.loki_spool_dir or default_spool_dir(), self.settings.loki_spool_max_bytes)
            try:
                spool.open(adopt=False)
                self._spool = spool
            except ConfigError as exc:
                self._warn("spool", "taskiq-monitor: %s; Loki outages drop records", exc)
            except OSError:
                self._warn(
                    "spool", "taskiq-monitor: Loki spool directory %s unusable; outages drop records", spool.directory
                )
        if self._client is None:
            self._client = self._new_client()

    def _new_client(self) -> httpx.Client:
        return httpx.Client(
            timeout=httpx.Timeout(
                self.settings.loki_timeout_seconds, connect=self.settings.loki_connect_timeout_seconds
            ),
            headers=self._headers(),
            auth=self._auth(),
            transport=self._transport,
        )

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore trace hook: remember the sockets of our connections, to abort a hanging push on close."""
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if isinstance(sock, socket.socket):
                self._sockets.add(sock)

    # -- helpers -------------------------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Content-Encoding": "gzip", "User-Agent": "taskiq-monitor"}
        if self.settings.loki_bearer_token is not None:
            headers["Authorization"] = f"Bearer {self.settings.loki_bearer_token.get_secret_value()}"
        if self.settings.loki_tenant_id:
            headers["X-Scope-OrgID"] = self.settings.loki_tenant_id
        return headers

    def _auth(self) -> httpx.BasicAuth | None:
        if self.settings.loki_username and self.settings.loki_password is not None:
            return httpx.BasicAuth(self.settings.loki_username, self.settings.loki_password.get_secret_value())
        return None

    def _count(self, result: str, records: int) -> None:
        if records:
            self.metrics.by_result[result].inc(records)

    def _count_overflow(self) -> None:
        if self._overflow:
            with self._overflow_lock:
                dropped, self._overflow = self._overflow, 0
            if dropped:
                self._warn("queue_full", "taskiq-monitor: Loki queue full; dropped %d records", dropped)
                self._count(LOG_DROPPED, dropped)

    def _update_gauges(self) -> None:
        spool = self._spool
        if spool is not None:
            lost = spool.take_lost()
            if lost:
                self._warn("spool_lost", "taskiq-monitor: %d spooled Loki records were deleted from disk", lost)
                self._count(LOG_DROPPED, lost)
        queued = len(self._queue) + sum(b.records for b in list(self._outbox))
        self.metrics.queue.set(queued)
        self.metrics.spool_bytes.set(spool.own_bytes if spool is not None else 0)

    def _labels(self, event: TaskEvent) -> tuple[tuple[str, str], ...]:
        name = event.task_name
        if name not in self._task_names:
            if len(self._task_names) < MAX_STREAM_TASK_NAMES:
                self._task_names.add(name)
            else:
                name = OTHER
        labels = (*self._base_labels, ("task_name", name), ("status", event.status))
        return (*labels, ("env", self._env)) if self._env else labels

    def _entry(self, event: TaskEvent) -> tuple[PushEntry, int]:
        line = record_json(event)  # shared with the other sinks: serialised once per event
        metadata = {"task_id": str(event.task_id)}
        if event.trace_id:
            metadata["trace_id"] = str(event.trace_id)
        ts = str(int(event.timestamp * 1_000_000) * 1000)
        return (self._labels(event), ts, line, metadata), len(line) + len(event.task_id) + 64

    def _new_batch(self, entries: list[PushEntry]) -> Batch:
        self._seq += 1
        return Batch((time.time_ns(), self._seq), len(entries), gzip_body(encode_push(entries)), entries)

    def _spool_write(self, batch: Batch) -> None:
        """Spool ``batch`` or count it as dropped; never raises."""
        spool = self._spool
        try:
            kept = spool is not None and spool.write(batch)
        except Exception as exc:
            self._warn(
                "spool_error",
                "taskiq-monitor: Loki spool write failed (%s); dropping %d records",
                exc,
                batch.records,
            )
            self._count(LOG_DROPPED, batch.records)
            return
        if kept:
            self._count(LOG_SPOOLED, batch.records)
        else:
            self._warn("spool_full", "taskiq-monitor: Loki spool full or unusable; dropping %d records", batch.records)
            self._count(LOG_DROPPED, batch.records)

    def _spool_queue(self) -> None:
        """Serialise what is left in the queue and spool it (close() when the collector is stuck)."""
        entries: list[PushEntry] = []
        while True:
            try:
                event = self._queue.popleft()
            except IndexError:
                break
            try:
                entries.append(self._entry(event)[0])
            except Exception:
                self._count(LOG_DROPPED, 1)
        step = self.settings.loki_batch_max_records
        for start in range(0, len(entries), step):
            chunk = entries[start : start + step]
            try:
                batch = self._new_batch(chunk)
            except Exception:
                self._count(LOG_DROPPED, len(chunk))
                continue
            batch.entries = None
            self._spool_write(batch)

    # -- collector thread ------------------------------------------------------------------------------------------
    def _collector(self, run: _Run) -> None:
        run.ready.wait(30)  # the sender opens the spool first
        while True:
            try:
                if self._collect(run):
                    run.collector_done.set()
                    with self._cond:
                        self._cond.notify_all()
                    return
            except Exception:
                lost = len(self._building) + (self._carry is not None)
                self._building, self._carry = [], None
                self._count(LOG_DROPPED, lost)
                self._warn("collector", "taskiq-monitor: Loki collector error; %d records dropped", lost, exc_info=True)
                time.sleep(self.ERROR_PAUSE_SECONDS)

    def _collect(self, run: _Run) -> bool:
        """One round: wait for records (or the batch timer), turn them into batches. True when stopped and drained."""
        max_records = self.settings.loki_batch_max_records
        max_bytes = self.settings.loki_batch_max_bytes
        stopping = run.stop.is_set()
        if not stopping and len(self._queue) < max_records and self._carry is None:
            self._wake_collector.wait(self.settings.loki_batch_wait_seconds)
            self._wake_collector.clear()
        stopping = run.stop.is_set()
        self._count_overflow()
        while self._queue or self._carry is not None:
            entries: list[PushEntry] = []
            self._building = entries
            size = 0
            if self._carry is not None:
                entries.append(self._carry[0])
                size = self._carry[1]
                self._carry = None
            while self._queue and len(entries) < max_records:
                try:
                    event = self._queue.popleft()
                except IndexError:
                    break
                try:
                    entry, entry_size = self._entry(event)
                except Exception:
                    self._warn("encode", "taskiq-monitor: a task event could not be encoded for Loki")
                    self._count(LOG_DROPPED, 1)
                    continue
                if entries and size + entry_size > max_bytes:
                    self._carry = (entry, entry_size)
                    break
                entries.append(entry)
                size += entry_size
            if not entries:
                break
            self._hand_over(self._new_batch(entries), run)
            self._building = []
            # A partial batch waits for more records unless stopping (the time bound has already passed).
            if not stopping and len(self._queue) < max_records and self._carry is None:
                break
        self._update_gauges()
        return stopping and not self._queue and self._carry is None

    def _hand_over(self, batch: Batch, run: _Run) -> None:
        spool_busy = self._spool is not None and len(self._spool) > 0
        with self._cond:
            if not run.abandon and not self._down and not spool_busy and len(self._outbox) < self.OUTBOX_MAX:
                self._outbox.append(batch)
                self._cond.notify_all()
                return
        batch.entries = None
        self._spool_write(batch)
        with self._cond:
            self._cond.notify_all()

    # -- sender thread -------------------------------------------------------------------------------------------------
    def _next_batch(self) -> Batch | None:
        """The oldest batch, from the outbox or the spool."""
        spool_key = self._spool.head_key() if self._spool is not None else None
        with self._cond:
            if self._outbox and (spool_key is None or self._outbox[0].key < spool_key):
                return self._outbox[0]
        return self._spool.head() if spool_key is not None and self._spool is not None else None

    def _sender(self, run: _Run) -> None:
        try:
            self._setup()
        except Exception:
            self._warn("setup", "taskiq-monitor: Loki shipper set-up failed", exc_info=True)
        finally:
            run.ready.set()
        if self._spool is not None:
            with contextlib.suppress(Exception):
                self._spool.adopt_orphans()
        while True:
            try:
                if self._send_round(run):
                    return
            except Exception:
                self._warn("sender", "taskiq-monitor: Loki sender error", exc_info=True)
                self._salvage(self._sending)
                time.sleep(self.ERROR_PAUSE_SECONDS)
            finally:
                self._sending = None

    def _send_round(self, run: _Run) -> bool:
        """Send the oldest batch, or wait for one. True when the thread is done."""
        if run.abandon:
            return True
        stopping = run.stop.is_set()
        if stopping and (self._down or (run.deadline is not None and time.monotonic() >= run.deadline)):
            # Shutting down with Loki away (or out of time): everything left in memory goes to the spool.
            self._spool_outbox()
            if run.collector_done.is_set():
                self._spool_outbox()
                return True
            with self._cond:
                self._cond.wait(0.01)
            return False
        if self._backoff_step and not stopping:
            delay = self._next_probe - time.monotonic()
            if delay > 0:
                run.stop.wait(delay)
                return False
        batch = self._next_batch()
        if batch is None:
            if stopping and run.collector_done.is_set() and not self._outbox:
                return True
            with self._cond:
                self._cond.wait(0.05 if stopping else 0.5)
            if self._spool is not None and not stopping:
                self._spool.maybe_adopt()
            self._update_gauges()
            return False
        self._sending = batch
        self._send(batch, run)
        self._sending = None
        self._update_gauges()
        return False

    def _salvage(self, batch: Batch | None) -> None:
        """After an unexpected error while sending ``batch``: keep it if it is in memory, else drop it (counted)."""
        if batch is None:
            return
        if batch.path is not None:
            # A spooled batch that makes the sender fail (a corrupt file?) would block the spool's head forever.
            if self._spool is not None:
                self._spool.remove(batch.path)
            self._count(LOG_DROPPED, batch.records)
            return
        with self._cond:
            kept = any(b is batch for b in self._outbox)
            if kept:
                self._outbox.remove(batch)
        if kept:
            batch.entries = None
            self._spool_write(batch)

    def _spool_outbox(self) -> None:
        with self._cond:
            pending = list(self._outbox)
            self._outbox.clear()
        for batch in pending:
            self._spool_write(batch)

    def _done(self, batch: Batch) -> None:
        if batch.path is not None and self._spool is not None:
            self._spool.remove(batch.path)
        else:
            with self._cond:
                if self._outbox and self._outbox[0] is batch:
                    self._outbox.popleft()

    def _send(self, batch: Batch, run: _Run) -> None:
        outcome, retry_after = self._post(batch.body, run)
        if outcome == _Outcome.OK:
            self._count(LOG_SHIPPED, batch.records)
            self._done(batch)
            self._recovered()
        elif outcome == _Outcome.BAD:
            entries = batch.entries if batch.entries is not None else decode_push(batch.body)
            rest = self._isolate(entries, run)
            self._done(batch)
            if rest:  # Loki went away while splitting: keep the unsent part
                self._spool_write(Batch(batch.key, len(rest), gzip_body(encode_push(rest))))
        else:
            self._retry_later(batch, retry_after, run)

    def _recovered(self) -> None:
        if self._down:
            logger.info("taskiq-monitor: Loki is reachable again; replaying the spool")
        self._down = False
        self._backoff_step = 0

    def _retry_later(self, batch: Batch, retry_after: float | None, run: _Run) -> None:
        self._backoff_step += 1
        base = self.settings.loki_backoff_initial_seconds * 2 ** min(self._backoff_step - 1, 16)
        delay = min(self.settings.loki_backoff_max_seconds, base) * random.uniform(0.5, 1.0)  # jitter
        if retry_after is not None:
            delay = min(self.settings.loki_backoff_max_seconds, max(delay, retry_after))
        self._next_probe = time.monotonic() + delay
        if batch.path is not None:
            self._down = True  # a spooled batch failed again: still down, probe later
        elif self._backoff_step > self.settings.loki_retries or run.stop.is_set():
            # Loki stays down: this and the other in-memory batches go to disk; the spool's head is the probe.
            if not self._down:
                self._warn(
                    "down",
                    "taskiq-monitor: Loki at %s unavailable; spooling records to %s",
                    self._redactor.redact_text(self.url),
                    self._spool.directory if self._spool is not None else "-",
                )
            self._down = True
            self._spool_outbox()

    def _isolate(self, entries: list[PushEntry], run: _Run) -> list[PushEntry]:
        """Send ``entries`` in halves until the rejected ones are alone; drop those. Returns what stays unsent."""
        if len(entries) == 1:
            self._warn("rejected", "taskiq-monitor: Loki rejected a record (400); dropped it")
            self._count(LOG_DROPPED, 1)
            return []
        middle = len(entries) // 2
        for index, half in enumerate((entries[:middle], entries[middle:])):
            outcome, _ = self._post(gzip_body(encode_push(half)), run)
            if outcome == _Outcome.OK:
                self._count(LOG_SHIPPED, len(half))
            elif outcome == _Outcome.BAD:
                rest = self._isolate(half, run)
                if rest:
                    return rest + (entries[middle:] if index == 0 else [])
            else:
                return half + (entries[middle:] if index == 0 else [])
        return []

    def _post(self, body: bytes, run: _Run) -> tuple[str, float | None]:
        if run.abandon:
            return _Outcome.RETRY, None
        timeout: httpx.Timeout | None = None
        if run.deadline is not None:
            remaining = max(0.05, run.deadline - time.monotonic())
            timeout = httpx.Timeout(
                min(self.settings.loki_timeout_seconds, remaining),
                connect=min(self.settings.loki_connect_timeout_seconds, remaining),
            )
        try:
            client = self._client
            if client is None:
                client = self._client = self._new_client()
            extensions = {"trace": self._trace}
            if timeout is not None:
                response = client.post(self.url, content=body, timeout=timeout, extensions=extensions)
            else:
                response = client.post(self.url, content=body, extensions=extensions)
        except httpx.HTTPError as exc:
            logger.debug("taskiq-monitor: Loki push failed: %s", type(exc).__name__)
            return _Outcome.RETRY, None
        except Exception:
            logger.debug("taskiq-monitor: Loki push failed", exc_info=True)
            return _Outcome.RETRY, None
        status = response.status_code
        if 200 <= status < 300:
            return _Outcome.OK, None
        if status in (400, 413, 422):
            logger.debug("taskiq-monitor: Loki rejected a push (%d): %.300s", status, response.text)
            return _Outcome.BAD, None
        if status in (401, 403, 404):
            self._warn(f"http{status}", "taskiq-monitor: Loki answered %d (check URL/credentials); spooling", status)
        return _Outcome.RETRY, retry_after_seconds(response.headers.get("retry-after"))

    # -- introspection (tests, benchmarks) ---------------------------------------------------------------------------
    def _live_threads(self) -> list[threading.Thread]:
        return [t for t in (self._collector_thread, self._sender_thread) if t is not None]

    def pending(self) -> int:
        """Records not yet accepted by Loki or spooled (queue + in-memory batches)."""
        return len(self._queue) + sum(b.records for b in list(self._outbox))

    def spooled_files(self) -> Iterator[Path]:
        return iter([item[1] for item in self._spool.files] if self._spool is not None else [])


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when absent or unparseable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None


# -- process hooks: registered once per process, for every live sink -----------------------------------------------
_SINKS: weakref.WeakSet[LokiSink] = weakref.WeakSet()
_HOOKS_LOCK = threading.Lock()
_hooks_registered = False


def _register(sink: LokiSink) -> None:
    global _hooks_registered
    with _HOOKS_LOCK:
        _SINKS.add(sink)
        if not _hooks_registered:  # inherited by forked children, like the registrations themselves
            os.register_at_fork(after_in_child=_after_fork_all_sinks)
            atexit.register(_flush_all_sinks)
            _hooks_registered = True


def _after_fork_all_sinks() -> None:
    global _HOOKS_LOCK
    _HOOKS_LOCK = threading.Lock()
    for sink in list(_SINKS):
        with contextlib.suppress(Exception):
            sink._after_fork()


def _flush_all_sinks() -> None:
    """``atexit``: flush the sinks whose process never called ``close()`` (a no-op for the others)."""
    for sink in list(_SINKS):
        with contextlib.suppress(Exception):
            sink.flush_sync()
