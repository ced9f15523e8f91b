"""The Loki sink: ``emit`` on the hot path, a collector thread (records → batches) and a sender thread (batches →
Loki, or the spool), their start, restart and shutdown.

* The task's hot path only appends to an in-memory deque. Serialisation, gzip and HTTP run in two daemon threads,
  so no worker event loop ever waits for Loki and it works the same in any process (web app, worker child,
  scheduler). A worker child's threads start on ``startup`` or on the first event, and again after a fork.
  Starting them is cheap — the sender thread opens the spool and the HTTP client — so no event loop does start-up
  I/O. An error inside a thread's loop (a full disk, a removed spool directory, a corrupt spool file) counts the
  batch concerned as dropped unless it can be kept, is logged once, and the loop goes on; a thread that ends
  anyway is restarted by the next ``emit()``. Hooks (at-fork, ``atexit``) are registered once per process
  (``hooks``).
* The collector never does network I/O, so a hung Loki cannot make the queue grow: while the sender is busy, down
  or has a backlog, new batches go to the spool. Memory is bounded by ``loki_queue_max_records`` plus a few
  batches.
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

Why one module of ~560 lines: the collector, the sender and ``close()`` share one small protocol — the queue, the
outbox, the condition ``_cond``, the ``_Run`` of the current start (stop, deadline, abandon) — and every way a
record can be lost or sent twice is a question about that protocol. It reads best in one place; what is not part of
it (the push format, the spool, HTTP and backoff, the process hooks) lives in the sibling modules.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from taskiq_monitor.errors import ConfigError
from taskiq_monitor.events import STATUS_RUNNING, EventSink, FinishedAttempt, QueuedEvent, refuse, resolve
from taskiq_monitor.logs import WarnOnce
from taskiq_monitor.metrics import LOG_DROPPED, LOG_SHIPPED, LOG_SPOOLED, LogShippingMetrics
from taskiq_monitor.redaction import Redactor
from taskiq_monitor.settings import Settings
from taskiq_monitor.sinks.loki import hooks
from taskiq_monitor.sinks.loki.format import (
    Batch,
    EntryEncoder,
    PushEntry,
    decode_push,
    encode_push,
    gzip_body,
    gzipped,
)
from taskiq_monitor.sinks.loki.spool import Spool, default_spool_dir
from taskiq_monitor.sinks.loki.transport import Backoff, Outcome, Transport, isolate

logger = logging.getLogger(__name__)


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
    """Event sink pushing to Loki; see the package docstring. ``emit`` never blocks and never raises."""

    OUTBOX_MAX = 4  # batches waiting in memory for the sender; beyond it, batches are spooled
    PROMPT_RECORDS = 128  # queued events that wake the collector to encode them (see _collect)
    ABORT_GRACE_SECONDS = 0.5  # after the flush budget: abort the in-flight push, spool the rest, let threads end
    ERROR_PAUSE_SECONDS = 0.1  # after an unexpected error in a shipper thread, before its loop continues
    deferred = True  # the collector builds the events of handles (events.resolve)

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
        self._warn = WarnOnce(logger)
        self.metrics = LogShippingMetrics(registry)
        self._http = Transport(settings, self._warn, transport)
        self.url = self._http.url
        self._encoder = EntryEncoder(settings.service_name, settings.env)
        self._gzip = settings.loki_compression == "gzip"
        # Plain strings: a TaskStatus member hashes and compares as its value.
        self._statuses = frozenset(settings.loki_statuses)
        self._ships_running = STATUS_RUNNING in self._statuses
        self._queue: deque[QueuedEvent] = deque()
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
        self._carry: tuple[PushEntry, int] | None = None  # collector: the record that did not fit the last batch
        self._building: list[PushEntry] = []  # collector: the batch being built (counted as dropped on an error)
        self._building_size = 0  # collector: its approximate size in a push body
        self._due: float | None = None  # collector: when the batch being built must be handed over (monotonic)
        # The collector encodes queued events once this many are waiting (see _collect), or when a batch is due.
        self._wake_at = min(self.PROMPT_RECORDS, settings.loki_batch_max_records)
        self._sending: Batch | None = None  # sender: the batch being pushed
        self._seq = 0
        self._down = False
        self._backoff = Backoff(settings)
        self._redactor = Redactor(settings.redact_keys)  # only to keep URLs out of our own log messages
        self._pid = os.getpid()
        hooks.register(self)

    # -- EventSink -------------------------------------------------------------------------------------------------
    def emit(self, event: QueuedEvent) -> None:
        try:
            if event.status not in self._statuses:
                if self._ships_running and type(event) is FinishedAttempt:
                    # Its running event would be coalesced into this final one, which Loki does not get: keep it.
                    refuse(event)
                return
            if not self._running:
                self._start_threads()  # cheap: spool and HTTP client are opened by the sender thread
            queue = self._queue
            if len(queue) >= self._queue_max:
                refuse(event)
                with self._overflow_lock:  # only on this path; the collector counts it as dropped
                    self._overflow += 1
                return
            queue.append(event)
            if len(queue) >= self._wake_at and not self._wake_collector.is_set():
                self._wake_collector.set()
        except Exception:  # pragma: no cover - emit must never raise
            refuse(event)
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
                self._carry, self._building, self._building_size, self._due = None, [], 0, None
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
        self._http.abort()
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
        self._http.abort()  # wakes a push blocked in a read; its batch is in the outbox and spooled below
        self._spool_outbox()
        collector = self._collector_thread
        if collector is not None:
            collector.join(max(0.0, grace_end - time.monotonic()))
            if collector.is_alive():  # stuck (slow disk?): take the queue without it
                self._spool_queue()
        self._spool_outbox()
        if self._sender_thread is not None:
            self._sender_thread.join(max(0.0, grace_end - time.monotonic()))

    def after_fork(self) -> None:
        """In a forked child (``hooks``): threads do not survive fork; records queued by the parent are the parent's
        to ship. The next ``emit()`` starts this process's own threads, spool owner and HTTP client."""
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
        self._http.forget_after_fork()
        self._carry, self._building, self._sending = None, [], None
        self._building_size, self._due = 0, None
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
        self._http.open()

    # -- helpers -------------------------------------------------------------------------------------------------
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
        queued = len(self._queue) + len(self._building) + sum(b.records for b in list(self._outbox))
        self.metrics.queue.set(queued)
        self.metrics.spool_bytes.set(spool.own_bytes if spool is not None else 0)

    def _entry(self, item: QueuedEvent) -> tuple[PushEntry, int] | None:
        """The entry of a queued event, or None for a running event coalesced into its final one."""
        event = resolve(item)
        return None if event is None else self._encoder.entry(event)

    def _new_batch(self, entries: list[PushEntry]) -> Batch:
        self._seq += 1
        raw = encode_push(entries)
        return Batch((time.time_ns(), self._seq), len(entries), gzip_body(raw) if self._gzip else raw, entries)

    def _spool_write(self, batch: Batch) -> None:
        """Spool ``batch`` or count it as dropped; never raises."""
        spool = self._spool
        try:
            if spool is not None:
                # The spool holds gzip bodies only: its cap counts bytes, and a batch spooled while Loki is down
                # waits on disk, where ten times fewer bytes matter more than the CPU of compressing it then.
                batch.body = gzipped(batch.body)
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
                encoded = self._entry(event)
            except Exception:
                self._count(LOG_DROPPED, 1)
                continue
            if encoded is not None:
                entries.append(encoded[0])
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
                self._building, self._building_size, self._carry = [], 0, None
                self._count(LOG_DROPPED, lost)
                self._warn("collector", "taskiq-monitor: Loki collector error; %d records dropped", lost, exc_info=True)
                time.sleep(self.ERROR_PAUSE_SECONDS)

    def _collect(self, run: _Run) -> bool:
        """One round: wait for records (or the batch timer), encode them, hand over the batches that are full or due.
        True when stopped and drained.

        Records are encoded as soon as ``PROMPT_RECORDS`` are queued, not when their batch is due: a queued event
        holds a dozen objects the cyclic garbage collector tracks (the event, its parameters and their redacted
        copies), and waiting a whole ``loki_batch_wait_seconds`` in the queue promoted them all to the oldest
        generation, which made full collections — paid by the task's event loop as much as by this thread —
        frequent. An encoded entry is strings and a tuple: nothing for the collector to scan.
        """
        max_records = self.settings.loki_batch_max_records
        max_bytes = self.settings.loki_batch_max_bytes
        if self._due is None:  # a new batch period: its first record waits at most loki_batch_wait_seconds
            self._due = time.monotonic() + self.settings.loki_batch_wait_seconds
        stopping = run.stop.is_set()
        if not stopping and len(self._queue) < self._wake_at and self._carry is None:
            self._wake_collector.wait(max(0.0, self._due - time.monotonic()))
            self._wake_collector.clear()
        stopping = run.stop.is_set()
        self._count_overflow()
        while True:
            entries = self._building
            if self._carry is not None and not entries:
                entries.append(self._carry[0])
                self._building_size = self._carry[1]
                self._carry = None
            while self._queue and len(entries) < max_records and self._carry is None:
                try:
                    event = self._queue.popleft()
                except IndexError:
                    break
                try:
                    encoded = self._entry(event)
                except Exception:
                    self._warn("encode", "taskiq-monitor: a task event could not be encoded for Loki")
                    self._count(LOG_DROPPED, 1)
                    continue
                if encoded is None:
                    continue  # coalesced: its final event follows in the queue
                entry, entry_size = encoded
                if entries and self._building_size + entry_size > max_bytes:
                    self._carry = (entry, entry_size)
                    break
                entries.append(entry)
                self._building_size += entry_size
            full = len(entries) >= max_records or self._carry is not None
            if not entries or not (full or stopping or time.monotonic() >= self._due):
                break  # a partial batch waits for more records (encoded already) until it is due
            self._hand_over(self._new_batch(entries), run)
            self._building, self._building_size = [], 0
            self._due = time.monotonic() + self.settings.loki_batch_wait_seconds
        if not self._building and time.monotonic() >= self._due:
            self._due = None
        self._update_gauges()
        return stopping and not self._queue and self._carry is None and not self._building

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
        if not stopping:
            delay = self._backoff.remaining()
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
        if outcome == Outcome.OK:
            self._count(LOG_SHIPPED, batch.records)
            self._done(batch)
            self._recovered()
        elif outcome == Outcome.BAD:
            entries = batch.entries if batch.entries is not None else decode_push(batch.body)
            rest = isolate(entries, lambda body: self._post(body, run)[0], self._shipped, self._rejected)
            self._done(batch)
            if rest:  # Loki went away while splitting: keep the unsent part
                self._spool_write(Batch(batch.key, len(rest), gzip_body(encode_push(rest))))
        else:
            self._retry_later(batch, retry_after, run)

    def _recovered(self) -> None:
        if self._down:
            logger.info("taskiq-monitor: Loki is reachable again; replaying the spool")
        self._down = False
        self._backoff.reset()

    def _retry_later(self, batch: Batch, retry_after: float | None, run: _Run) -> None:
        self._backoff.failed(retry_after)
        if batch.path is not None:
            self._down = True  # a spooled batch failed again: still down, probe later
        elif self._backoff.step > self.settings.loki_retries or run.stop.is_set():
            # Loki stays down: this and the other in-memory batches go to disk; the spool's head is the probe.
            if not self._down:
                url = self._redactor.redact_text(self.url)
                if self._spool is not None:
                    self._warn(
                        "down",
                        "taskiq-monitor: Loki at %s unavailable; spooling records to %s",
                        url,
                        self._spool.directory,
                    )
                else:  # no usable spool (warned at start): say what happens to the records, not "spooling to -"
                    self._warn(
                        "down",
                        "taskiq-monitor: Loki at %s unavailable; no usable spool: dropping records until it is back",
                        url,
                    )
            self._down = True
            self._spool_outbox()

    def _shipped(self, records: int) -> None:
        self._count(LOG_SHIPPED, records)

    def _rejected(self) -> None:
        self._warn("rejected", "taskiq-monitor: Loki rejected a record (400); dropped it")
        self._count(LOG_DROPPED, 1)

    def _post(self, body: bytes, run: _Run) -> tuple[str, float | None]:
        return self._http.post(body, deadline=run.deadline, abandoned=run.abandon)

    # -- introspection (tests, benchmarks) ---------------------------------------------------------------------------
    def _live_threads(self) -> list[threading.Thread]:
        return [t for t in (self._collector_thread, self._sender_thread) if t is not None]

    def pending(self) -> int:
        """Records not yet accepted by Loki or spooled (queue + in-memory batches)."""
        return len(self._queue) + len(self._building) + sum(b.records for b in list(self._outbox))

    def spooled_files(self) -> Iterator[Path]:
        return iter([item[1] for item in self._spool.files] if self._spool is not None else [])
