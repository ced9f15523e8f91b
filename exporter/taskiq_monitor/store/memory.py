"""The in-process store: the same state in this process, for the in-memory demo and unit tests."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from taskiq_monitor.events import OTHER, STATUS_PENDING, STATUS_RUNNING
from taskiq_monitor.settings import Settings
from taskiq_monitor.store.history import Execution, HistoryPage, HistoryQuery
from taskiq_monitor.store.history_memory import MemoryHistory
from taskiq_monitor.store.model import (
    Entry,
    Snapshot,
    TaskState,
    WriteBatch,
    format_event_id,
    minute_of,
    parse_event_id,
    window_minutes,
)

# The in-process store keeps fewer events: it lives in the memory of the process that runs the tasks.
MEMORY_STREAM_CAP = 20_000
_MEMORY_BATCH_IDS = 1000  # batch ids the in-process store remembers (its writes never time out: few retries)


@dataclass(slots=True)
class _MemTask:
    pending: dict[str, float] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)
    minutes: dict[int, dict[str, float]] = field(default_factory=dict)
    expired: int = 0


class MemoryStore:
    """The same state in this process (thread-safe): for the in-memory demo and unit tests."""

    # History records are not encoded for this store: it keeps an execution's latest event line, the string its
    # stream entry holds too (store/history.py, decode_line). Encoding one costs the flusher ~1.5 µs, compressing it
    # ~4.5 more (zlib's fixed cost per call, whatever the level); at most MEMORY_HISTORY_CAP lines are kept.
    history_from_payload = True

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings if settings is not None else Settings()
        self._lock = threading.Lock()
        self._tasks: dict[str, _MemTask] = {}
        self._registered: set[str] = set()
        self._batches: dict[str, None] = {}  # recent batch ids (a batch is applied once, as in Redis)
        self._unregistered: set[str] = set()
        self._workers: dict[str, float] = {}
        self._running: dict[str, dict[str, tuple[str, float]]] = {}  # worker -> member -> (task, started)
        cap = min(self.settings.stream_max_events, MEMORY_STREAM_CAP)
        # (task name, status, payload) per entry, beside its id in _keys. Plain tuples of strings, not Entry objects:
        # the cyclic GC stops tracking such tuples, and these live long — 20,000 tracked objects replaced at the
        # event rate made full collections frequent in the process that runs the tasks. Entries are built on read.
        self._events: deque[tuple[str, str, str]] = deque(maxlen=cap)
        self._keys: deque[tuple[int, int]] = deque(maxlen=cap)
        self._last: tuple[int, int] = (0, 0)
        self._trimmed_before = 0  # minute buckets before this one were deleted (write trims once a minute)
        self._listeners: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self.history = MemoryHistory(self.settings)
        self.attached = False  # a sink writes here (so the exporter of this process should serve it)

    def configure(self, settings: Settings) -> None:
        with self._lock:
            self.settings = settings
            self.history.settings = settings
            cap = min(settings.stream_max_events, MEMORY_STREAM_CAP)
            if self._events.maxlen != cap:
                self._events = deque(self._events, maxlen=cap)
                self._keys = deque(self._keys, maxlen=cap)

    def _task(self, name: str) -> _MemTask:
        task = self._tasks.get(name)
        if task is None:
            task = self._tasks[name] = _MemTask()
        return task

    def _fold(self, name: str) -> str:
        """Task names are bounded as in Redis (see ``APPLY_LUA``): registered ones plus ``max_task_names`` others."""
        if name in self._registered or name in self._unregistered:
            return name
        if len(self._unregistered) < self.settings.max_task_names:
            self._unregistered.add(name)
            return name
        return OTHER

    # -- writer ------------------------------------------------------------------------------------------------
    def write(self, batch: WriteBatch) -> int:
        now = batch.now
        window = self.settings.reorder_window_seconds
        with self._lock:
            if batch.batch_id in self._batches:
                return 0
            self._batches[batch.batch_id] = None
            if len(self._batches) > _MEMORY_BATCH_IDS:
                del self._batches[next(iter(self._batches))]
            for name in batch.task_names:
                self._registered.add(name)
                self._task(name)
            running = self._running.setdefault(batch.worker, {}) if batch.worker else None
            if batch.resync_running is not None and running is not None:
                running.clear()
                running.update({m: (self._fold(t), at) for m, (t, at) in batch.resync_running.items()})
            # Locals and one clock read per batch: this loop runs for every event of the process (the flusher thread).
            events, keys, history = self._events, self._keys, self.history
            last_ms, seq = self._last
            batch_ms = int(time.time() * 1000)
            names: dict[str, tuple[str, _MemTask]] = {}  # task name -> (folded name, its state)
            for op in batch.ops:
                folded = names.get(op.task_name)
                if folded is None:
                    name = self._fold(op.task_name)
                    folded = names[op.task_name] = (name, self._task(name))
                name, task = folded
                # Stream ids as Redis mints them: milliseconds, then a sequence within the same millisecond.
                if batch_ms > last_ms:
                    last_ms, seq = batch_ms, 0
                else:
                    seq += 1
                events.append((name, op.status, op.payload))
                keys.append((last_ms, seq))
                status, member = op.status, op.member
                if op.history_member:
                    history.record(name, op)
                if status == STATUS_PENDING:
                    if member not in task.seen:
                        task.pending[member] = op.enqueued_at
                    continue
                task.pending.pop(member, None)
                seen = task.seen
                seen.pop(member, None)  # re-inserted at the end: "seen" stays ordered by time
                seen[member] = now
                if status == STATUS_RUNNING:
                    if running is not None and op.track_running:
                        running[member] = (name, op.started_at)
                    continue
                if running is not None and op.track_running:
                    running.pop(member, None)
                minute = minute_of(op.timestamp)
                bucket = task.minutes.get(minute)
                if bucket is None:
                    bucket = task.minutes[minute] = {}
                duration = op.duration if status == "success" else None  # FR-013: mean of successful runs
                for target in (task.totals, bucket):
                    target[status] = target.get(status, 0) + 1
                    if duration is not None:
                        target["dur_sum"] = target.get("dur_sum", 0.0) + duration
                        target["dur_n"] = target.get("dur_n", 0) + 1
            self._last = (last_ms, seq)
            for name, member in batch.removals:
                task = self._task(self._fold(name))
                task.pending.pop(member, None)
                task.seen.pop(member, None)
                task.seen[member] = now
            cutoff = now - window
            # Minute buckets age out once a minute, not at every batch: a day's window holds 1,442 buckets per task,
            # and scanning them all at every batch cost the flusher 0.4 ms a batch with 15 tasks (5 µs an event in
            # batches of 80), whatever the event rate.
            oldest_minute = minute_of(now) - self.settings.stats_window_seconds // 60 - 2
            trim_minutes = oldest_minute != self._trimmed_before
            self._trimmed_before = oldest_minute
            for task in self._tasks.values():
                # dicts keep insertion order, and "seen" is kept ordered by time: trim from the front and stop at
                # the first fresh entry (no scan of the whole window per batch).
                seen = task.seen
                while seen:
                    member = next(iter(seen))
                    if seen[member] >= cutoff:
                        break
                    del seen[member]
                if trim_minutes:
                    for minute in [m for m in task.minutes if m < oldest_minute]:
                        del task.minutes[minute]
            if batch.worker:
                if batch.leaving:
                    self._workers.pop(batch.worker, None)
                    self._running.pop(batch.worker, None)
                else:
                    self._workers[batch.worker] = now
            listeners = list(self._listeners)
        if batch.ops:
            for loop, event in listeners:
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    loop.call_soon_threadsafe(event.set)
        return 0

    def close(self) -> None:
        pass

    # -- reader ------------------------------------------------------------------------------------------------
    def snapshot_sync(self, *, with_stats: bool = False) -> Snapshot:
        now = time.time()
        s = self.settings
        minutes = window_minutes(now, s.stats_window_seconds)
        with self._lock:
            for worker in [w for w, beat in self._workers.items() if beat < now - s.worker_ttl_seconds]:
                del self._workers[worker]
                self._running.pop(worker, None)
            running: dict[str, int] = {}
            for tasks in self._running.values():
                for name, _started in tasks.values():
                    running[name] = running.get(name, 0) + 1
            states: dict[str, TaskState] = {}
            for name, task in self._tasks.items():
                cutoff = now - s.pending_horizon_seconds
                for member in [m for m, at in task.pending.items() if at < cutoff]:
                    del task.pending[member]
                    task.expired += 1
                state = TaskState(
                    task_name=name,
                    pending=len(task.pending),
                    oldest_pending_at=min(task.pending.values()) if task.pending else None,
                    running=running.get(name, 0),
                    expired=task.expired,
                )
                if with_stats:
                    state.totals = dict(task.totals)
                    for minute in minutes:
                        for k, v in task.minutes.get(minute, {}).items():
                            state.window[k] = state.window.get(k, 0) + v
                states[name] = state
            return Snapshot(taken_at=now, workers=len(self._workers), tasks=states)

    async def snapshot(self, *, with_stats: bool = False) -> Snapshot:
        return self.snapshot_sync(with_stats=with_stats)

    def _slice_after(self, after: tuple[int, int], until: tuple[int, int] | None, count: int) -> list[Entry]:
        with self._lock:
            keys = list(self._keys)
            start = bisect.bisect_right(keys, after)
            end = len(keys) if until is None else bisect.bisect_right(keys, until)
            stop = min(end, start + count)
            return _entries(keys[start:stop], list(itertools.islice(self._events, start, stop)))

    async def read_after(self, after: str, count: int, block_ms: int) -> list[Entry]:
        key = parse_event_id(after)
        entries = self._slice_after(key, None, count)
        if entries or block_ms <= 0:
            return entries
        event = asyncio.Event()
        listener = (asyncio.get_running_loop(), event)
        with self._lock:
            self._listeners.append(listener)
        try:
            entries = self._slice_after(key, None, count)
            if not entries:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), block_ms / 1000)
                entries = self._slice_after(key, None, count)
            return entries
        finally:
            with self._lock:
                self._listeners.remove(listener)

    async def range_asc(self, after: str, until: str, count: int) -> list[Entry]:
        return self._slice_after(parse_event_id(after), parse_event_id(until), count)

    async def range_desc(self, before: str, since: str, count: int) -> list[Entry]:
        """``before``/``since`` in XREVRANGE syntax: ``+`` / ``(id`` / ``id`` and ``-`` / ``id``."""
        with self._lock:
            keys = list(self._keys)
            if before == "+":
                end = len(keys)
            elif before.startswith("("):
                end = bisect.bisect_left(keys, parse_event_id(before[1:]))
            else:
                end = bisect.bisect_right(keys, parse_event_id(before))
            floor = 0 if since == "-" else bisect.bisect_left(keys, parse_event_id(since))
            start = max(floor, end - count)
            if end <= start:
                return []
            return _entries(keys[start:end], list(itertools.islice(self._events, start, end)))[::-1]

    async def last_id(self) -> str:
        with self._lock:
            return format_event_id(self._keys[-1]) if self._keys else "0-0"

    async def first_id(self) -> str | None:
        with self._lock:
            return format_event_id(self._keys[0]) if self._keys else None

    async def task_names(self) -> set[str]:
        with self._lock:
            return set(self._tasks)

    # -- history ----------------------------------------------------------------------------------------------
    async def history_page(self, query: HistoryQuery) -> HistoryPage:
        with self._lock:
            return self.history.page(query)

    async def history_attempts(self, task_id: str) -> list[Execution]:
        with self._lock:
            return self.history.attempts(task_id)

    async def history_series(self, minutes: int) -> tuple[int, dict[str, dict[str, list[int]]]]:
        last = minute_of(time.time())
        first = last - minutes + 1
        series: dict[str, dict[str, list[int]]] = {}
        with self._lock:
            for name, task in sorted(self._tasks.items()):
                rows = [task.minutes.get(m, {}) for m in range(first, last + 1)]
                series[name] = {s: [int(row.get(s, 0)) for row in rows] for s in ("success", "failed", "retried")}
        return first * 60, series

    async def history_expire_step(self) -> tuple[int, int, bool]:
        with self._lock:
            aged, counted = self.history.expire()
        return aged, counted, False

    def history_counts_sync(self) -> tuple[int, dict[str, int]]:
        with self._lock:
            return len(self.history.records), dict(self.history.evicted)

    async def aclose(self) -> None:
        pass


def _entries(keys: list[tuple[int, int]], rows: list[tuple[str, str, str]]) -> list[Entry]:
    return [
        Entry(format_event_id(key), name, status, payload)
        for key, (name, status, payload) in zip(keys, rows, strict=True)
    ]


_MEMORY: MemoryStore | None = None
_MEMORY_LOCK = threading.Lock()


def memory_store(settings: Settings | None = None) -> MemoryStore:
    """The process-wide in-memory store (created on first use)."""
    global _MEMORY
    with _MEMORY_LOCK:
        if _MEMORY is None:
            _MEMORY = MemoryStore(settings)
        elif settings is not None:
            _MEMORY.configure(settings)
        return _MEMORY


def current() -> MemoryStore | None:
    """The process-wide in-memory store if it was created."""
    return _MEMORY
