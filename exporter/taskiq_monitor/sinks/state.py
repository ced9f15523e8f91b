"""``StateSink``: feeds the shared task state and the live-feed stream (see ``taskiq_monitor.state``).

The hot path (``emit``, on the task's event loop) only appends the event to a bounded deque and, if the flusher
sleeps, wakes it: no I/O, no JSON, no locks beyond the GIL. A daemon thread drains the deque in batches and applies
each batch in one Redis round trip (one Lua script: stream entries and state changes together).

Failure model:

* Redis unreachable: the current batch is kept and retried with backoff (0.1 s doubling to 5 s); new events fill
  the buffer up to ``state_buffer_events``; beyond that events are dropped and counted in
  ``taskiq_monitor_state_events_total{result="dropped"}``. A dropped ``running``/finished event still removes its
  task from the pending set once Redis is back (a bounded set of "started while dropping" members is kept), so a
  drop never leaves a phantom pending task.
* After any failure the worker's running set is rewritten whole from what this process actually runs, so running
  counts heal rather than drift.
* Clean shutdown (``close``) flushes what is buffered (bounded time) and removes the worker's heartbeat.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from taskiq_monitor.events import STATUS_PENDING, STATUS_RUNNING, TaskEvent, to_record
from taskiq_monitor.settings import Settings
from taskiq_monitor.state import RedisWriter, StateOp, StateWriter, WriteBatch, memory_store

logger = logging.getLogger("taskiq_monitor.state")

RESULT_WRITTEN = "written"
RESULT_DROPPED = "dropped"
_MAX_BACKOFF = 5.0
_MAX_REMOVALS = 100_000  # members remembered while dropping (≈ 100 bytes each)
_CLOSE_TIMEOUT = 5.0

_COUNTER: Counter | None = None
_COUNTER_LOCK = threading.Lock()


def state_events_counter(registry: CollectorRegistry | None = None) -> Counter:
    """``taskiq_monitor_state_events_total{result}`` (one per process; reused when it already exists)."""
    global _COUNTER
    with _COUNTER_LOCK:
        if registry is not None:
            return Counter(
                "taskiq_monitor_state_events",
                "Task events written to the shared state / live-feed stream, or dropped (buffer full).",
                ["result"],
                registry=registry,
            )
        if _COUNTER is None:
            from prometheus_client import REGISTRY

            existing = getattr(REGISTRY, "_names_to_collectors", {}).get("taskiq_monitor_state_events_total")
            _COUNTER = (
                existing
                if isinstance(existing, Counter)
                else Counter(
                    "taskiq_monitor_state_events",
                    "Task events written to the shared state / live-feed stream, or dropped (buffer full).",
                    ["result"],
                )
            )
        return _COUNTER


def _json_default(value: Any) -> str:
    return repr(value)


class StateSink:
    """An ``EventSink`` for the shared state; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        writer: StateWriter | None = None,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        # Without Redis the in-process store is used, but only once the broker turns out to run its tasks in this
        # process (InMemoryBroker, e.g. the demo): elsewhere nobody could read it, so the sink stays dormant.
        self._enabled = writer is not None or bool(settings.redis_url)
        if writer is None:
            if settings.redis_url:
                writer = RedisWriter(settings)
            else:
                store = memory_store(settings)
                store.attached = True
                writer = store
        self.writer: StateWriter = writer
        counter = state_events_counter(registry)
        self._written = counter.labels(RESULT_WRITTEN)
        self._dropped = counter.labels(RESULT_DROPPED)
        self._written.inc(0)
        self._dropped.inc(0)
        self._buffer: deque[TaskEvent] = deque()
        self._capacity = settings.state_buffer_events
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        # _running/_worker_flag/_removals are written by emit() (GIL-atomic dict operations), the rest by the flusher.
        self._worker_flag = False
        self._worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._running: dict[str, tuple[str, float]] = {}
        self._removals: dict[tuple[str, str], None] = {}
        self._task_names: list[str] = []
        self._resync = True
        self._last_write = 0.0
        self.dropped = 0
        self.written = 0
        self.failures = 0

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def attach_broker(self, broker: Any) -> None:
        """Called by the middleware at start-up: a worker process heartbeats and registers its tasks."""
        with contextlib.suppress(Exception):
            self._task_names = sorted(broker.get_all_tasks())
        if getattr(broker, "is_worker_process", False):
            self._worker_flag = True
        if not self._enabled:
            from taskiq import InMemoryBroker

            self._enabled = isinstance(broker, InMemoryBroker)
            if not self._enabled:
                return
        self._ensure_thread()
        self._wake.set()

    @property
    def active(self) -> bool:
        """Whether events are wanted: the middleware builds none for a dormant sink."""
        return self._enabled

    async def start(self) -> None:
        if self._enabled:
            self._ensure_thread()

    async def close(self) -> None:
        import asyncio

        await asyncio.to_thread(self.stop, _CLOSE_TIMEOUT)

    def stop(self, timeout: float = _CLOSE_TIMEOUT) -> None:
        """Flush what is buffered (bounded by ``timeout``) and stop the flusher thread."""
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.join(timeout)
        self._thread = None

    def _ensure_thread(self) -> None:
        with self._thread_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._worker_id = f"{socket.gethostname()}:{os.getpid()}"  # a forked child is its own worker
            self._thread = threading.Thread(target=self._run, name="taskiq-monitor-state", daemon=True)
            self._thread.start()

    # -- hot path -----------------------------------------------------------------------------------------------
    def emit(self, event: TaskEvent) -> None:
        if not self._enabled:
            return
        try:
            if self._thread is None:
                self._ensure_thread()
            status = event.status
            if status != STATUS_PENDING:
                # What this process runs is tracked here, not in the flusher: even when events are dropped, the
                # running set written after an outage is exact.
                member = f"{event.task_id}:{event.attempt}"
                if status == STATUS_RUNNING:
                    self._worker_flag = True
                    self._running[member] = (event.task_name, event.started_at or event.timestamp)
                else:
                    self._running.pop(member, None)
            if len(self._buffer) < self._capacity:
                self._buffer.append(event)
            else:
                self._drop(event)
            if not self._wake.is_set():
                self._wake.set()
        except Exception:  # emit must never raise
            self.dropped += 1

    def _drop(self, event: TaskEvent) -> None:
        self.dropped += 1
        self._dropped.inc()
        self._resync = True
        if event.status != STATUS_PENDING and len(self._removals) < _MAX_REMOVALS:
            # Not in the feed any more, but the task did leave the queue: remove it from pending once Redis is back.
            self._removals[(event.task_name, f"{event.task_id}:{event.attempt}")] = None

    # -- flusher thread -----------------------------------------------------------------------------------------
    def _prepare(self, event: TaskEvent) -> StateOp:
        member = f"{event.task_id}:{event.attempt}"
        return StateOp(
            status=event.status,
            task_name=event.task_name,
            member=member,
            timestamp=event.timestamp,
            enqueued_at=event.enqueued_at if event.enqueued_at is not None else event.timestamp,
            started_at=event.started_at if event.started_at is not None else event.timestamp,
            duration=event.duration_seconds,
            payload=json.dumps(to_record(event), default=_json_default, separators=(",", ":")),
        )

    def _run(self) -> None:
        batch: WriteBatch | None = None
        backoff = 0.1
        heartbeat = self.settings.heartbeat_seconds
        while True:
            stopping = self._stop.is_set()
            if batch is None:
                batch = self._next_batch()
            due = self._worker_flag and time.monotonic() - self._last_write >= heartbeat
            if batch.ops or batch.removals or batch.task_names or batch.resync_running is not None or due:
                try:
                    self.writer.write(batch)
                except Exception:
                    self.failures += 1
                    self._resync = True
                    if self.failures == 1 or self.failures % 100 == 0:
                        logger.warning("taskiq-monitor state: cannot write to Redis (retrying)", exc_info=True)
                    if stopping:
                        return
                    self._stop.wait(backoff)
                    backoff = min(_MAX_BACKOFF, backoff * 2)
                    continue
                backoff = 0.1
                self._last_write = time.monotonic()
                if batch.ops:
                    self.written += len(batch.ops)
                    self._written.inc(len(batch.ops))
                batch = None
                if self._buffer:
                    continue
            else:
                batch = None
            if stopping:
                if self._buffer:
                    continue
                self._leave()
                return
            wait = heartbeat - (time.monotonic() - self._last_write) if self._worker_flag else heartbeat
            self._wake.wait(max(0.0, wait))
            self._wake.clear()

    def _next_batch(self) -> WriteBatch:
        ops: list[StateOp] = []
        limit = self.settings.state_batch_events
        buffer = self._buffer
        while buffer and len(ops) < limit:
            event = buffer.popleft()
            try:
                ops.append(self._prepare(event))
            except Exception:
                self.dropped += 1
                self._dropped.inc()
        batch = WriteBatch(now=time.time(), ops=ops)
        if self._removals:
            batch.removals = list(self._removals)
            self._removals.clear()
        if self._task_names:
            batch.task_names, self._task_names = self._task_names, []
        if self._worker_flag:
            batch.worker = self._worker_id
            if self._resync:
                batch.resync_running = dict(self._running)
                self._resync = False
        return batch

    def _leave(self) -> None:
        if not self._worker_flag:
            return
        with contextlib.suppress(Exception):
            self.writer.write(WriteBatch(now=time.time(), worker=self._worker_id, leaving=True))
        with contextlib.suppress(Exception):
            self.writer.close()
