"""``StateSink``: feeds the shared task state, the live-feed stream and the execution history (see
``taskiq_monitor.store``).

The hot path (``emit``, on the task's event loop) only appends the event to a bounded deque: no I/O, no JSON. A
daemon thread drains the deque in batches and applies each batch in one Redis round trip (one Lua script: stream
entries and state changes together). While events flow, the thread gathers them for ``state_flush_interval_seconds``
between writes; the loop wakes it only from its idle sleep (the first event after a quiet spell) or when a full
batch is waiting. Woken for every event instead, at thousands of events a second, the thread wrote batches of one or
two events, and every wake cost both threads a futex round trip.

Failure model:

* Redis unreachable: the current batch is kept and retried with backoff (0.1 s doubling to 5 s); new events fill
  the buffer up to ``state_buffer_events``; beyond that events are dropped and counted in
  ``taskiq_monitor_state_events_total{result="dropped"}``. A dropped ``running``/finished event still removes its
  task from the pending set once Redis is back (a bounded set of "started while dropping" members is kept), so a
  drop never leaves a phantom pending task. The log gets one warning when writes begin to fail (the cause and
  Redis's address, never its password), a reminder a minute, and one info line when a write succeeds again
  (``logs.Outage``); each failed write, with its traceback, is a debug record.
* After any failure the worker's running set is rewritten whole from what this process actually runs, so running
  counts heal rather than drift. The flusher appends a marker to the buffer, then copies the running set: events
  ahead of the marker still go to the stream and the pending/finished counts, but no longer change the running set
  (they are already in the snapshot — an old ``running`` whose finish was dropped must not come back). ``emit``
  changes the running set before it appends the event, and each step is one atomic operation under the GIL, so
  every event ahead of a marker is in the copy taken after it, with no lock on the hot path; an event behind the
  marker may be in the copy too, and applying it again changes nothing.
* Only connection errors and timeouts are retried. A batch that fails otherwise (an event that cannot be encoded,
  a key of the wrong type…) is split until the bad event is isolated; that event is dropped and counted. Batches
  are idempotent (a batch id checked by the script), so a batch retried after a timeout is not applied twice.
* Clean shutdown (``close``) flushes what is buffered (bounded time) and removes the worker's heartbeat; what cannot
  be written because Redis is down, or is still waiting when the time is up (Redis hung), is counted as dropped.
* A process that never calls ``close`` (a script that kiqs tasks and returns without ``broker.shutdown()``) flushes
  at interpreter exit, through one ``atexit`` hook per process, within the same bounded time. The flusher is a
  daemon thread: without the hook its last batch died with the process, uncounted (1500 tasks sent, 1484 pending
  shown, no drop counted). A process ended by a signal or ``os._exit`` (taskiq's worker children, which close
  their sinks through the broker's shutdown first) runs no ``atexit`` hook.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from taskiq_monitor.events import (
    STATUS_PENDING,
    STATUS_RUNNING,
    EventSink,
    QueuedEvent,
    TaskEvent,
    record_json,
    refuse,
    resolve,
)
from taskiq_monitor.logs import Outage, is_transient, redis_target
from taskiq_monitor.promclient import registered_collector
from taskiq_monitor.settings import Settings
from taskiq_monitor.store import RedisWriter, StateOp, StateWriter, WriteBatch, memory_store
from taskiq_monitor.store.history import STATUS_RANK, encode_member, encode_record, event_score


def _encodable(text: str) -> str:
    """``text``, or with unencodable characters (lone surrogates) escaped: Redis takes UTF-8 only."""
    if text.isascii():  # nearly always; no copy made
        return text
    try:
        text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode()
    return text


logger = logging.getLogger(__name__)


class _Marker:
    """Put in the buffer by the flusher where it snapshots the running set: the events ahead of it are in the
    snapshot."""


_MARKER = _Marker()

RESULT_WRITTEN = "written"
RESULT_DROPPED = "dropped"
_MAX_BACKOFF = 5.0
_MAX_REMOVALS = 100_000  # members remembered while dropping (≈ 100 bytes each)
_CLOSE_TIMEOUT = 5.0  # close() and the exit flush: Redis' socket timeout (redis_kwargs), so one hung write fits

# Sinks whose flusher ran in this process, flushed by one atexit hook (registered once, at the first start).
_STARTED: weakref.WeakSet[StateSink] = weakref.WeakSet()
_exit_hook_registered = False


def _flush_at_exit() -> None:
    """``atexit``: flush every sink whose process never called ``close()`` (a no-op for the others), all within one
    budget: an exiting process never waits on a dead Redis for longer than that."""
    deadline = time.monotonic() + _CLOSE_TIMEOUT
    for sink in list(_STARTED):
        with contextlib.suppress(Exception):
            sink.flush_at_exit(max(0.0, deadline - time.monotonic()))


def _register_exit_flush(sink: StateSink) -> None:
    global _exit_hook_registered
    _STARTED.add(sink)
    if not _exit_hook_registered:
        # atexit runs before the interpreter stops its daemon threads: the flusher still writes then.
        atexit.register(_flush_at_exit)
        _exit_hook_registered = True


_SHARED: dict[str, Any] = {}  # full metric name -> this process's collector on the default registry
_SHARED_LOCK = threading.Lock()
_EVENTS_HELP = "Task events written to the shared state / live feed, or dropped (buffer full, or unwritten at exit)."
_BUFFER_HELP = "Task events waiting in memory for the shared state store, as its writer thread last saw them."


def _per_process(full_name: str, kind: type[Any], make: Callable[..., Any], registry: CollectorRegistry | None) -> Any:
    """A collector of ``registry``, or the default registry's one for this process (reused when it already exists:
    every StateSink of a process shares it)."""
    with _SHARED_LOCK:
        if registry is not None:
            return make(registry=registry)
        metric = _SHARED.get(full_name)
        if metric is None:
            from prometheus_client import REGISTRY

            existing = registered_collector(REGISTRY, full_name)
            metric = _SHARED[full_name] = existing if isinstance(existing, kind) else make()
        return metric


def state_events_counter(registry: CollectorRegistry | None = None) -> Counter:
    """``taskiq_monitor_state_events_total{result}`` (one per process; reused when it already exists)."""
    counter: Counter = _per_process(
        "taskiq_monitor_state_events_total",
        Counter,
        lambda **kw: Counter("taskiq_monitor_state_events", _EVENTS_HELP, ["result"], **kw),
        registry,
    )
    return counter


def state_buffer_gauge(registry: CollectorRegistry | None = None) -> Gauge:
    """``taskiq_monitor_state_buffer_events`` (one per process; reused when it already exists).

    livesum: every process reports its own buffer, and a dead process's share vanishes with it. Set by the writer
    thread at each batch, never by the task's loop: a writer kept from the GIL (a loop that never idles) updates it
    late, and then ``taskiq_monitor_state_events_total{result="dropped"}`` tells the rest.
    """
    gauge: Gauge = _per_process(
        "taskiq_monitor_state_buffer_events",
        Gauge,
        lambda **kw: Gauge("taskiq_monitor_state_buffer_events", _BUFFER_HELP, multiprocess_mode="livesum", **kw),
        registry,
    )
    return gauge


def _history_kept(events: list[TaskEvent]) -> set[int]:
    """Positions of the events whose execution-history record survives this batch.

    The history keeps one record per attempt: the one of highest status rank, the latest among equals (the stores
    apply that rule, ``STATUS_RANK``). When a batch holds several events of one attempt — ``running`` then
    ``success`` of a short task, nearly always — the records the store would overwrite within the same write are
    neither encoded nor written: encoding a record is the flusher's largest cost per event (store/history.py). The
    stream entries of those events are written as before. Every event's record carries the same score (its
    enqueue time, or start time), so the surviving record lands where the first one would have. One edge: should
    the store refuse the surviving event for good (``_isolate`` drops it), the attempt gets no record from this batch.
    """
    best: dict[tuple[str, int], tuple[int, int]] = {}  # (task_id, attempt) -> (rank, position)
    for index, event in enumerate(events):
        key = (event.task_id, event.attempt)
        rank = STATUS_RANK.get(event.status, 0)
        seen = best.get(key)
        if seen is None or rank >= seen[0]:
            best[key] = (rank, index)
    return {index for _rank, index in best.values()}


class StateSink(EventSink):
    """An ``EventSink`` for the shared state; see the module docstring."""

    deferred = True  # the flusher builds the events of handles (events.resolve)

    def __init__(
        self,
        settings: Settings,
        writer: StateWriter | None = None,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self._history = settings.history_enabled
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
        self._buffered = state_buffer_gauge(registry)
        self._written = counter.labels(RESULT_WRITTEN)
        self._dropped = counter.labels(RESULT_DROPPED)
        self._written.inc(0)
        self._dropped.inc(0)
        self._buffer: deque[QueuedEvent | _Marker] = deque()
        self._capacity = settings.state_buffer_events
        self._wake = threading.Event()
        # True while the flusher sleeps for want of events (emit must wake it); False while it gathers a batch.
        self._idle = False
        self._interval = settings.state_flush_interval_seconds
        # Buffered events that wake a gathering flusher early: a full batch, or a full buffer (then emit drops).
        self._full = min(settings.state_batch_events, settings.state_buffer_events)
        # A store that keeps the event line as the record (the in-process one) gets no encoded record.
        self._encode_history = not getattr(writer, "history_from_payload", False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()
        # Shared by emit() and the flusher without a lock (see the module docstring): _running (emit changes it, the
        # flusher copies it), _resync (either sets it, the flusher clears it before it copies), _removals (emit
        # appends, the flusher pops). The lock took a third of emit's time.
        self._markers = 0  # snapshot markers still in the buffer (flusher only): events ahead of one do not track
        self._worker_flag = False
        self._worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._running: dict[tuple[str, int], tuple[str, float]] = {}  # (task id, attempt) -> (task, started)
        self._removals: deque[tuple[str, str]] = deque()
        self._task_names: list[str] = []
        self._resync = True
        self._retry: deque[WriteBatch] = deque()  # parts of a split batch, written before anything new
        self._last_write = 0.0
        self._writing = 0  # events of the batch being written now (counted as dropped if the process exits first)
        self.dropped = 0
        self.written = 0
        self.failures = 0
        # Redis away: one warning when writes begin to fail (the cause and where, never the password), a reminder a
        # minute, one info line when a write succeeds again. It was a traceback on the 1st and every 100th failure.
        self.outage = Outage(logger, "taskiq-monitor state", redis_target(settings.redis_url))

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

    def stop(self, timeout: float = _CLOSE_TIMEOUT, *, exiting: bool = False) -> None:
        """Flush what is buffered (bounded by ``timeout``) and stop the flusher thread.

        What is still buffered when the time is up (Redis hung) is counted as dropped and discarded; with ``exiting``
        (the process ends now) the batch being written is too, for the thread dies with the process.
        """
        thread = self._thread
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.join(timeout)
        self._thread = None
        if thread.is_alive():
            self._abandon(exiting)

    def flush_at_exit(self, timeout: float) -> None:
        """Interpreter exit without ``close()``: write what is buffered within ``timeout``, count the rest dropped."""
        if not self._enabled or (self._thread is None and not self._buffer):
            return  # closed already, or never used
        self._ensure_thread()  # a flusher that died (or was never started in this process) would leave them
        self.stop(timeout, exiting=True)

    def _abandon(self, exiting: bool) -> None:
        """Called when ``stop`` gives up on a flusher still blocked on Redis: what it has not taken yet is taken away
        (never written) and counted as dropped."""
        lost = self._writing if exiting else 0
        while self._retry:
            with contextlib.suppress(IndexError):  # the flusher may take one at the same time
                lost += len(self._retry.popleft().ops)
        while self._buffer:
            with contextlib.suppress(IndexError):
                if not isinstance(self._buffer.popleft(), _Marker):
                    lost += 1
        self._count_dropped(lost)
        if lost:
            logger.warning("taskiq-monitor state: %d event(s) not written at shutdown (Redis did not answer)", lost)

    def _ensure_thread(self) -> None:
        with self._thread_lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._worker_id = f"{socket.gethostname()}:{os.getpid()}"  # a forked child is its own worker
            self._thread = threading.Thread(target=self._run, name="taskiq-monitor-state", daemon=True)
            self._thread.start()
            _register_exit_flush(self)

    # -- hot path -----------------------------------------------------------------------------------------------
    def emit(self, event: QueuedEvent) -> None:
        if not self._enabled:
            return
        try:
            if self._thread is None:
                self._ensure_thread()
            status = event.status
            if status != STATUS_PENDING:
                # What this process runs is tracked here, not in the flusher: even when events are dropped, the
                # running set written after an outage is exact. Before the append (see the module docstring).
                if status == STATUS_RUNNING:
                    self._worker_flag = True
                    self._running[(event.task_id, event.attempt)] = (
                        event.task_name,
                        event.started_at or event.timestamp,
                    )
                else:
                    self._running.pop((event.task_id, event.attempt), None)
            buffer = self._buffer
            if len(buffer) < self._capacity:
                buffer.append(event)
            else:
                self._drop(event)
            if self._idle or len(buffer) >= self._full:
                self._idle = False
                if not self._wake.is_set():
                    self._wake.set()
        except Exception:  # emit must never raise
            refuse(event)
            self.dropped += 1

    def _drop(self, event: QueuedEvent) -> None:
        refuse(event)
        self._count_dropped(1)
        self._resync = True
        if event.status != STATUS_PENDING and len(self._removals) < _MAX_REMOVALS:
            # Not in the feed any more, but the task did leave the queue: remove it from pending once Redis is back.
            self._removals.append((event.task_name, f"{event.task_id}:{event.attempt}"))

    def _count_dropped(self, n: int) -> None:
        if n > 0:
            self.dropped += n
            self._dropped.inc(n)

    # -- flusher thread -----------------------------------------------------------------------------------------
    def _prepare(self, event: TaskEvent, *, history: bool = True) -> StateOp:
        task_id, attempt, timestamp = event.task_id, event.attempt, event.timestamp
        enqueued_at, started_at = event.enqueued_at, event.started_at
        history = history and self._history
        # Positional (StateOp's field order): this runs for every event.
        return StateOp(
            # A plain str, not the TaskStatus member: the stores keep it in tuples the cyclic GC then need not track.
            str(event.status),
            _encodable(event.task_name),
            _encodable(f"{task_id}:{attempt}"),
            timestamp,
            enqueued_at if enqueued_at is not None else timestamp,
            started_at if started_at is not None else timestamp,
            event.duration_seconds,
            record_json(event),  # shared with the other sinks: serialised once per event
            True,
            encode_member(task_id, attempt) if history else b"",
            encode_record(event) if history and self._encode_history else b"",
            event_score(event),
        )

    def _run(self) -> None:
        batch: WriteBatch | None = None
        backoff = 0.1
        heartbeat = self.settings.heartbeat_seconds
        while True:
            stopping = self._stop.is_set()
            if batch is None:
                batch = self._retry.popleft() if self._retry else self._next_batch()
            due = self._worker_flag and time.monotonic() - self._last_write >= heartbeat
            if batch.ops or batch.removals or batch.task_names or batch.resync_running is not None or due:
                batch.now = time.time()  # a retried batch (heartbeat) carries the time of this attempt
                self._writing = len(batch.ops)
                try:
                    rejected = self.writer.write(batch) or 0
                except Exception as exc:
                    self._writing = 0
                    if not is_transient(exc):
                        self._isolate(batch, exc)
                        batch = None
                        continue
                    self.failures += 1
                    self._buffered.set(len(self._buffer))  # growing while Redis is away
                    self._resync = True
                    self.outage.failed(exc)
                    if stopping:
                        self._lose_all(batch)
                        return
                    self._stop.wait(backoff)
                    backoff = min(_MAX_BACKOFF, backoff * 2)
                    continue
                self._writing = 0
                backoff = 0.1
                self.outage.recovered()
                self._last_write = time.monotonic()
                if rejected:
                    logger.warning("taskiq-monitor state: Redis rejected %d event(s) of a batch (dropped)", rejected)
                    self._count_dropped(rejected)
                if batch.ops and len(batch.ops) > rejected:
                    self.written += len(batch.ops) - rejected
                    self._written.inc(len(batch.ops) - rejected)
                wrote = bool(batch.ops)
                batch = None
                if self._retry or len(self._buffer) >= self._full or (stopping and self._buffer):
                    continue
                if wrote and not stopping:
                    # Events flow: gather the next batch for one interval (emit wakes us early for a full one).
                    self._wake.wait(self._interval)
                    self._wake.clear()
                    continue
            else:
                batch = None
            if stopping:
                if self._buffer or self._retry:
                    continue
                self._leave()
                return
            self._idle = True
            if self._buffer:  # appended before emit could see _idle
                self._idle = False
                continue
            wait = heartbeat - (time.monotonic() - self._last_write) if self._worker_flag else heartbeat
            self._wake.wait(max(0.0, wait))
            self._wake.clear()
            self._idle = False

    def _lose_all(self, batch: WriteBatch) -> None:
        """Shutdown while Redis is down: what is left is lost — count it."""
        lost = len(batch.ops) + sum(len(b.ops) for b in self._retry)
        self._retry.clear()
        while self._buffer:
            if self._buffer.popleft() is not _MARKER:
                lost += 1
        self._markers = 0
        self._count_dropped(lost)
        if lost:
            logger.warning("taskiq-monitor state: %d event(s) not written at shutdown (Redis unavailable)", lost)

    def _isolate(self, batch: WriteBatch, exc: Exception) -> None:
        """A batch failed for good (not a connection problem): split it until the bad event is found; drop that one.

        A bad batch must not stall the state forever, nor take its good events with it."""
        ops = batch.ops
        if len(ops) > 1:
            mid = len(ops) // 2
            first = WriteBatch(
                now=batch.now,
                ops=ops[:mid],
                worker=batch.worker,
                resync_running=batch.resync_running,
                removals=batch.removals,
                task_names=batch.task_names,
            )
            second = WriteBatch(now=batch.now, ops=ops[mid:], worker=batch.worker, leaving=batch.leaving)
            self._retry.appendleft(second)
            self._retry.appendleft(first)
            return
        logger.warning(
            "taskiq-monitor state: dropping %s that Redis cannot take: %s",
            f"a {ops[0].status} event of {ops[0].task_name!r}" if ops else "a batch without events",
            exc,
            exc_info=logger.isEnabledFor(logging.DEBUG),
        )
        if ops:
            self._count_dropped(1)
            rest = WriteBatch(
                now=batch.now,
                worker=batch.worker,
                resync_running=batch.resync_running,
                removals=batch.removals,
                task_names=batch.task_names,
                leaving=batch.leaving,
            )
            if rest.removals or rest.task_names or rest.resync_running is not None or rest.leaving:
                self._retry.appendleft(rest)
        else:
            self._resync = True  # the running set is rewritten with the next batch

    def _next_batch(self) -> WriteBatch:
        batch = WriteBatch(now=time.time())
        if self._worker_flag:
            batch.worker = self._worker_id
            if self._resync:
                # In this order (see the module docstring): a drop from now on asks for the next snapshot; every event
                # ahead of the marker is in the copy; an event behind it may be too (applied again, no change).
                self._resync = False
                self._buffer.append(_MARKER)
                self._markers += 1
                running = self._running.copy()  # one C call: atomic under the GIL
                batch.resync_running = {
                    _encodable(f"{task_id}:{attempt}"): (_encodable(task), started)
                    for (task_id, attempt), (task, started) in running.items()
                }
        limit = self.settings.state_batch_events
        buffer = self._buffer
        events: list[TaskEvent] = []
        tracks: list[bool] = []  # per event: whether it changes the running set (no marker ahead of it)
        while buffer and len(events) < limit:
            item = buffer.popleft()
            if isinstance(item, _Marker):
                self._markers -= 1
                continue
            try:
                event = resolve(item)
            except Exception:
                self._count_dropped(1)
                continue
            if event is not None:
                events.append(event)
                tracks.append(self._markers == 0)
        self._buffered.set(len(buffer))  # what waits behind this batch
        kept = _history_kept(events) if self._history else None
        for index, event in enumerate(events):
            try:
                op = self._prepare(event, history=kept is None or index in kept)
            except Exception:
                self._count_dropped(1)
                continue
            op.track_running = tracks[index]
            batch.ops.append(op)
        removals: dict[tuple[str, str], None] = {}
        for _ in range(len(self._removals)):
            task, member = self._removals.popleft()
            removals[(_encodable(task), _encodable(member))] = None
        batch.removals = list(removals)
        if self._task_names:
            batch.task_names, self._task_names = [_encodable(n) for n in self._task_names], []
        return batch

    def _leave(self) -> None:
        if not self._worker_flag:
            return
        with contextlib.suppress(Exception):
            self.writer.write(WriteBatch(now=time.time(), worker=self._worker_id, leaving=True))
        with contextlib.suppress(Exception):
            self.writer.close()
