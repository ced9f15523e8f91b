"""Shared task state: pending and running tasks per type, worker heartbeats, and the event stream of the live feed.

Every process with ``MonitoringMiddleware`` writes (through :class:`taskiq_monitor.sinks.state.StateSink`); the
exporter reads (``taskiq_tasks_pending``, ``/api/v1/tasks``, ``/ws/events``). Two stores share one behaviour:

* :class:`RedisStore` (``TASKIQ_MONITOR_REDIS_URL``) — all processes and hosts see the same state. One Lua script
  applies a whole batch of events atomically, so the stream and the state never disagree.
* :class:`MemoryStore` — when no Redis is configured; only meaningful when tasks and exporter share a process (the
  in-memory demo). ``memory_store()`` is that process-wide instance.

Redis layout (``P`` = ``{taskiq_monitor}``, a hash tag). The scripts build their key names from the prefix
instead of declaring them as ``KEYS``, so Redis Cluster is not supported (use a standalone Redis or a primary with
replicas); the hash tag only keeps the keys together.::

    P:events              stream, fields t (task name), s (status), r (JSON record); XADD MAXLEN ~ N
    P:tasks               set of task names (registered by workers at start-up and seen in events)
    P:unregistered        task names seen in events but never registered (at most max_task_names; the events of
                          further unregistered names are folded into task name "other", like the metrics)
    P:batch:<id>          marks an applied write batch for 10 minutes: a batch retried after a timeout is
                          applied once
    P:pending:<task>      zset member "<task_id>:<attempt>", score enqueue time — add on pending, remove on running
    P:started:<task>      zset of recently started/finished members (reorder window): a late "pending" from
                          another process must not re-add a task that already started
    P:wrun:<host:pid>     hash member -> "<started>|<task>": what one worker process runs right now (TTL = worker
                          TTL, refreshed by every write and heartbeat, so a dead worker's tasks vanish with it)
    P:workers             zset "<host:pid>" -> last heartbeat
    P:expired             hash task -> pending entries expired by the horizon (a counter)
    P:totals:<task>       hash success/failed/retried counts and duration sums since the state began
    P:stats:<task>:<min>  the same per minute (TTL), for the windowed success rate and average duration

Each event costs O(log n) in Redis; the running set of a worker is rewritten whole after a Redis outage, so counts
heal instead of drifting (events older than that rewrite no longer change the running set: ``track_running``).
"Now" in the scripts is Redis's clock (``TIME``), so heartbeats and their expiry do not depend on host clocks.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import math
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from taskiq_monitor.events import COMPLETED_STATUSES, OTHER, STATUS_PENDING, STATUS_RUNNING
from taskiq_monitor.settings import Settings

FINISHED_STATUSES: tuple[str, ...] = COMPLETED_STATUSES

# A stream entry id: "<milliseconds>-<sequence>" (Redis stream ids; the memory store mints the same shape).
# The in-process store keeps fewer events: it lives in the memory of the process that runs the tasks.
MEMORY_STREAM_CAP = 20_000
_MEMORY_BATCH_IDS = 1000  # batch ids the in-process store remembers (its writes never time out: few retries)
EVENT_ID_RE = re.compile(r"^(\d{1,20})-(\d{1,20})$")
MAX_ID_PART = 2**64 - 1  # both parts of a Redis stream id are unsigned 64-bit integers


def parse_event_id(value: str) -> tuple[int, int]:
    """``"1700000000000-3"`` -> ``(1700000000000, 3)``; raises ``ValueError`` with a readable message."""
    match = EVENT_ID_RE.match(value)
    if match is None:
        raise ValueError(f"malformed event id {value!r}: expected '<milliseconds>-<sequence>', e.g. '1700000000000-0'")
    key = int(match.group(1)), int(match.group(2))
    if key[0] > MAX_ID_PART or key[1] > MAX_ID_PART:
        raise ValueError(f"malformed event id {value!r}: each part must be at most {MAX_ID_PART}")
    return key


def format_event_id(key: tuple[int, int]) -> str:
    return f"{key[0]}-{key[1]}"


@dataclass(slots=True)
class StateOp:
    """One event, reduced to what the state needs plus its JSON record for the stream."""

    status: str
    task_name: str
    member: str  # "<task_id>:<attempt>"
    timestamp: float
    enqueued_at: float
    started_at: float
    duration: float | None
    payload: str
    track_running: bool = True  # False for events older than the running-set rewrite they travel with (or follow)


@dataclass(slots=True)
class WriteBatch:
    """What a writer applies in one round trip."""

    now: float
    ops: list[StateOp] = field(default_factory=list)
    worker: str | None = None  # "host:pid" of a process that executes tasks (heartbeat + running set)
    resync_running: dict[str, tuple[str, float]] | None = None  # member -> (task, started): rewrite the running set
    removals: list[tuple[str, str]] = field(default_factory=list)  # (task, member) started while events were dropped
    task_names: list[str] = field(default_factory=list)  # tasks to register
    leaving: bool = False  # the worker shuts down: drop its heartbeat and running set
    batch_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # applied at most once (retries after timeouts)


@dataclass(slots=True)
class TaskState:
    task_name: str
    pending: int = 0
    oldest_pending_at: float | None = None
    running: int = 0
    expired: int = 0
    totals: dict[str, float] = field(default_factory=dict)  # success/failed/retried/dur_sum/dur_n
    window: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Snapshot:
    taken_at: float
    workers: int
    tasks: dict[str, TaskState]


@dataclass(slots=True, frozen=True)
class Entry:
    """A stream entry: id, task name, status and the JSON record as stored (never re-encoded)."""

    id: str
    task_name: str
    status: str
    payload: str

    @property
    def key(self) -> tuple[int, int]:
        return parse_event_id(self.id)


class StateWriter(Protocol):
    def write(self, batch: WriteBatch) -> int | None:
        """Apply the batch; may return the number of its events the store rejected (skipped, not retried)."""
        ...

    def close(self) -> None: ...


class StateStore(Protocol):
    """The exporter's view of the state (async for the API, sync for the Prometheus collector)."""

    def snapshot_sync(self, *, with_stats: bool = False) -> Snapshot: ...

    async def snapshot(self, *, with_stats: bool = False) -> Snapshot: ...

    async def read_after(self, after: str, count: int, block_ms: int) -> list[Entry]: ...

    async def range_asc(self, after: str, until: str, count: int) -> list[Entry]: ...

    async def range_desc(self, before: str, since: str, count: int) -> list[Entry]: ...

    async def last_id(self) -> str: ...

    async def first_id(self) -> str | None: ...

    async def task_names(self) -> set[str]: ...

    async def aclose(self) -> None: ...


def _minute(ts: float) -> int:
    return int(ts // 60)


def window_minutes(now: float, window: float) -> range:
    """The minute buckets that make up the stats window (minute resolution; the current minute included)."""
    last = _minute(now)
    return range(last - max(1, math.ceil(window / 60)) + 1, last + 1)


# ----------------------------------------------------------------------------------------------------------------
# Redis
# ----------------------------------------------------------------------------------------------------------------
# Every "now" of the scripts is Redis's own clock (TIME): heartbeats written by workers and pruned by exporters,
# and the reorder window, must not depend on how well the hosts' clocks agree. Event times (enqueued_at, the
# stats minute) stay the clocks of the processes that recorded them.
APPLY_LUA = """
local p = ARGV[1]
local batch_id = ARGV[2]
-- Idempotent batches: a batch retried after a timeout (Redis may have applied it already) is applied once.
if batch_id ~= '' and not redis.call('SET', p .. ':batch:' .. batch_id, '1', 'NX', 'EX', 600) then
  return {-1, 0}
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local maxlen = ARGV[3]
local window = tonumber(ARGV[4])
local stats_ttl = tonumber(ARGV[5])
local worker = ARGV[6]
local worker_ttl = tonumber(ARGV[7])
local resync = ARGV[8] == '1'
local leaving = ARGV[9] == '1'
local max_names = tonumber(ARGV[10])
local n_ops, n_run, n_rem, n_tasks = tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local i = 15
local stream = p .. ':events'
local wrun = p .. ':wrun:' .. worker
local tasks_key = p .. ':tasks'
local unreg_key = p .. ':unregistered'
local touched = {}
local names = {}
-- Task names are bounded like the metrics' task_name label: names registered by workers always count; at most
-- max_names others are accepted, the rest fold into 'other'.
local function fold(task)
  local known = names[task]
  if known then return known end
  local out = task
  if redis.call('SISMEMBER', tasks_key, task) == 0 then
    if redis.call('SCARD', unreg_key) < max_names then
      redis.call('SADD', unreg_key, task)
      redis.call('SADD', tasks_key, task)
    else
      out = 'other'
      redis.call('SADD', tasks_key, out)
    end
  end
  names[task] = out
  return out
end
local rewrite = {}
for _ = 1, n_run do
  rewrite[#rewrite + 1] = {ARGV[i], ARGV[i + 1], ARGV[i + 2]}
  i = i + 3
end
local ops_at = i
local rem_at = ops_at + 9 * n_ops
i = rem_at + 2 * n_rem
-- Registered task names first: the events of this batch may be the first of a newly registered task.
for _ = 1, n_tasks do
  redis.call('SADD', tasks_key, ARGV[i])
  touched[ARGV[i]] = true
  i = i + 1
end
if resync and worker ~= '' then redis.call('DEL', wrun) end
for _, r in ipairs(rewrite) do
  redis.call('HSET', wrun, r[1], r[3] .. '|' .. fold(r[2]))
end
local function apply(status, task, member, ts, enq, started, dur, payload, track)
  task = fold(task)
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 't', task, 's', status, 'r', payload)
  touched[task] = true
  local pending = p .. ':pending:' .. task
  local seen = p .. ':started:' .. task
  if status == 'pending' then
    if not redis.call('ZSCORE', seen, member) then redis.call('ZADD', pending, enq, member) end
    return
  end
  redis.call('ZREM', pending, member)
  redis.call('ZADD', seen, now, member)
  if status == 'running' then
    if track and worker ~= '' then redis.call('HSET', wrun, member, started .. '|' .. task) end
    return
  end
  if track and worker ~= '' then redis.call('HDEL', wrun, member) end
  local totals = p .. ':totals:' .. task
  local bucket = p .. ':stats:' .. task .. ':' .. math.floor(ts / 60)
  redis.call('HINCRBY', totals, status, 1)
  redis.call('HINCRBY', bucket, status, 1)
  if dur ~= '' then
    redis.call('HINCRBYFLOAT', totals, 'dur_sum', dur)
    redis.call('HINCRBY', totals, 'dur_n', 1)
    redis.call('HINCRBYFLOAT', bucket, 'dur_sum', dur)
    redis.call('HINCRBY', bucket, 'dur_n', 1)
  end
  redis.call('EXPIRE', bucket, stats_ttl)
end
-- One bad event (e.g. a key of the wrong type) is skipped and reported; it must not stall the others.
local failed = 0
i = ops_at
for _ = 1, n_ops do
  local ok = pcall(apply, ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3]), ARGV[i + 4], ARGV[i + 5],
    ARGV[i + 6], ARGV[i + 7], ARGV[i + 8] == '1')
  if not ok then failed = failed + 1 end
  i = i + 9
end
i = rem_at
for _ = 1, n_rem do
  local task, member = fold(ARGV[i]), ARGV[i + 1]
  i = i + 2
  pcall(function()
    redis.call('ZREM', p .. ':pending:' .. task, member)
    redis.call('ZADD', p .. ':started:' .. task, now, member)
  end)
  touched[task] = true
end
for task, _ in pairs(touched) do
  pcall(redis.call, 'ZREMRANGEBYSCORE', p .. ':started:' .. task, '-inf', '(' .. (now - window))
end
if worker ~= '' then
  if leaving then
    redis.call('ZREM', p .. ':workers', worker)
    redis.call('DEL', wrun)
  else
    redis.call('ZADD', p .. ':workers', now, worker)
    redis.call('EXPIRE', wrun, math.ceil(worker_ttl))
  end
end
return {n_ops - failed, failed}
"""

SNAPSHOT_LUA = """
local p = ARGV[1]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local horizon = tonumber(ARGV[2])
local worker_ttl = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local with_stats = ARGV[5] == '1'
local last_minute = math.floor(now / 60)
local first_minute = last_minute - math.max(1, math.ceil(window / 60)) + 1
local workers_key = p .. ':workers'
redis.call('ZREMRANGEBYSCORE', workers_key, '-inf', '(' .. (now - worker_ttl))
local workers = redis.call('ZRANGE', workers_key, 0, -1)
local running = {}
for _, w in ipairs(workers) do
  for _, v in ipairs(redis.call('HVALS', p .. ':wrun:' .. w)) do
    local sep = string.find(v, '|', 1, true)
    if sep then
      local t = string.sub(v, sep + 1)
      running[t] = (running[t] or 0) + 1
    end
  end
end
local function hash(key)
  local flat = redis.call('HGETALL', key)
  local out = {}
  for j = 1, #flat, 2 do out[flat[j]] = tonumber(flat[j + 1]) end
  return out
end
local expired = hash(p .. ':expired')
local tasks = {}
local function task_entry(t)
  local pk = p .. ':pending:' .. t
  local n = redis.call('ZREMRANGEBYSCORE', pk, '-inf', '(' .. (now - horizon))
  if n > 0 then
    expired[t] = redis.call('HINCRBY', p .. ':expired', t, n)
  end
  local oldest = redis.call('ZRANGE', pk, 0, 0, 'WITHSCORES')
  local entry = {
    pending = redis.call('ZCARD', pk),
    oldest = oldest[2] or '',
    running = running[t] or 0,
    expired = expired[t] or 0,
  }
  if with_stats then
    entry.totals = hash(p .. ':totals:' .. t)
    local win = {}
    for m = first_minute, last_minute do
      for k, v in pairs(hash(p .. ':stats:' .. t .. ':' .. m)) do win[k] = (win[k] or 0) + v end
    end
    entry.window = win
  end
  return entry
end
-- A task whose keys are unusable (e.g. overwritten with another type) is left out; the others are still reported.
for _, t in ipairs(redis.call('SMEMBERS', p .. ':tasks')) do
  local ok, entry = pcall(task_entry, t)
  if ok then tasks[t] = entry end
end
return cjson.encode({now = now, workers = #workers, tasks = tasks})
"""


def key_prefix(settings: Settings) -> str:
    return "{" + settings.state_key_prefix + "}"


def _fmt(value: float) -> str:
    return repr(float(value))


def apply_args(settings: Settings, batch: WriteBatch) -> list[str]:
    """ARGV of ``APPLY_LUA`` for one batch."""
    running = batch.resync_running or {}
    args: list[str] = [
        key_prefix(settings),
        batch.batch_id,
        str(settings.stream_max_events),
        _fmt(settings.reorder_window_seconds),
        str(settings.stats_window_seconds + 120),
        batch.worker or "",
        _fmt(settings.worker_ttl_seconds),
        "1" if batch.resync_running is not None else "0",
        "1" if batch.leaving else "0",
        str(settings.max_task_names),
        str(len(batch.ops)),
        str(len(running)),
        str(len(batch.removals)),
        str(len(batch.task_names)),
    ]
    for member, (task, started) in running.items():
        args += (member, task, _fmt(started))
    for op in batch.ops:
        args += (
            op.status,
            op.task_name,
            op.member,
            _fmt(op.timestamp),
            _fmt(op.enqueued_at),
            _fmt(op.started_at),
            "" if op.duration is None else _fmt(op.duration),
            op.payload,
            "1" if op.track_running else "0",
        )
    for task, member in batch.removals:
        args += (task, member)
    args += batch.task_names
    return args


# The longest XREAD BLOCK of the live feed; its connection's read timeout is this plus a margin, so a half-open
# connection (a Redis host that vanished without a FIN) is noticed instead of freezing the feed forever.
MAX_BLOCK_MS = 5000
_BLOCKING_MARGIN = 5.0


def _redis_kwargs(settings: Settings) -> dict[str, Any]:
    # Bounded socket timeouts: a hung Redis must neither hang a scrape nor the flusher thread forever.
    return {
        "socket_timeout": 5.0,
        "socket_connect_timeout": 3.0,
        "health_check_interval": 30,
        "socket_keepalive": True,
    }


class RedisWriter:
    """Applies batches with one EVALSHA (a pipeline of one command); used by the sink's flusher thread."""

    def __init__(self, settings: Settings) -> None:
        import redis

        if not settings.redis_url:
            raise ValueError("a Redis state store needs settings.redis_url")
        self.settings = settings
        self.client = redis.Redis.from_url(settings.redis_url, **_redis_kwargs(settings))
        self.script = self.client.register_script(APPLY_LUA)

    def write(self, batch: WriteBatch) -> int:
        """Apply ``batch``; returns the number of events Redis rejected (0 normally, also for a repeated batch)."""
        reply = self.script(args=apply_args(self.settings, batch))
        return int(reply[1]) if isinstance(reply, list) and len(reply) > 1 else 0

    def close(self) -> None:
        self.client.close()


def _entries(raw: Any) -> list[Entry]:
    out: list[Entry] = []
    for entry_id, fields in raw:
        out.append(
            Entry(
                id=entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id),
                task_name=fields.get(b"t", b"").decode(),
                status=fields.get(b"s", b"").decode(),
                payload=fields.get(b"r", b"{}").decode(),
            )
        )
    return out


def _parse_snapshot(raw: Any, now: float) -> Snapshot:
    data = json.loads(raw)
    now = float(data.get("now") or now)  # Redis's clock: the pending ages are measured against it
    tasks: dict[str, TaskState] = {}
    # cjson encodes an empty table as {} — both shapes are fine here.
    for name, entry in (data.get("tasks") or {}).items():
        oldest = entry.get("oldest")
        tasks[name] = TaskState(
            task_name=name,
            pending=int(entry.get("pending", 0)),
            oldest_pending_at=float(oldest) if oldest not in ("", None) else None,
            running=int(entry.get("running", 0)),
            expired=int(entry.get("expired", 0)),
            totals={k: float(v) for k, v in (entry.get("totals") or {}).items()},
            window={k: float(v) for k, v in (entry.get("window") or {}).items()},
        )
    return Snapshot(taken_at=now, workers=int(data.get("workers", 0)), tasks=tasks)


class RedisStore:
    """The exporter's reader of the Redis state (plus the sweep of expired pending entries and dead workers)."""

    def __init__(self, settings: Settings) -> None:
        import redis
        import redis.asyncio as aioredis

        if not settings.redis_url:
            raise ValueError("a Redis state store needs settings.redis_url")
        self.settings = settings
        self.prefix = key_prefix(settings)
        self.stream = f"{self.prefix}:events"
        self.sync = redis.Redis.from_url(settings.redis_url, **_redis_kwargs(settings))
        self._sync_snapshot = self.sync.register_script(SNAPSHOT_LUA)
        self.aio = aioredis.Redis.from_url(settings.redis_url, **_redis_kwargs(settings))
        self._aio_snapshot = self.aio.register_script(SNAPSHOT_LUA)
        # A separate connection pool for blocking XREADs: they must not starve the API's requests.
        self.aio_blocking = aioredis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=3.0,
            socket_timeout=MAX_BLOCK_MS / 1000 + _BLOCKING_MARGIN,
            socket_keepalive=True,
            health_check_interval=30,
        )

    def _snapshot_args(self, now: float, with_stats: bool) -> list[str]:
        return [
            self.prefix,
            _fmt(self.settings.pending_horizon_seconds),
            _fmt(self.settings.worker_ttl_seconds),
            str(self.settings.stats_window_seconds),
            "1" if with_stats else "0",
        ]

    def snapshot_sync(self, *, with_stats: bool = False) -> Snapshot:
        now = time.time()
        return _parse_snapshot(self._sync_snapshot(args=self._snapshot_args(now, with_stats)), now)

    async def snapshot(self, *, with_stats: bool = False) -> Snapshot:
        now = time.time()
        return _parse_snapshot(await self._aio_snapshot(args=self._snapshot_args(now, with_stats)), now)

    async def read_after(self, after: str, count: int, block_ms: int) -> list[Entry]:
        block_ms = max(0, min(block_ms, MAX_BLOCK_MS))
        reply: Any = await self.aio_blocking.xread({self.stream: after}, count=count, block=block_ms or None)
        return _entries(reply[0][1]) if reply else []

    async def range_asc(self, after: str, until: str, count: int) -> list[Entry]:
        return _entries(await self.aio.xrange(self.stream, min=f"({after}", max=until, count=count))

    async def range_desc(self, before: str, since: str, count: int) -> list[Entry]:
        return _entries(await self.aio.xrevrange(self.stream, max=before, min=since, count=count))

    async def last_id(self) -> str:
        last = await self.aio.xrevrange(self.stream, count=1)
        return _entries(last)[0].id if last else "0-0"

    async def first_id(self) -> str | None:
        first = await self.aio.xrange(self.stream, count=1)
        return _entries(first)[0].id if first else None

    async def task_names(self) -> set[str]:
        names: Any = await self.aio.smembers(f"{self.prefix}:tasks")
        return {n.decode() if isinstance(n, bytes) else str(n) for n in names}

    async def aclose(self) -> None:
        for client in (self.aio, self.aio_blocking):
            with contextlib.suppress(Exception):
                await client.aclose()
        with contextlib.suppress(Exception):
            self.sync.close()


# ----------------------------------------------------------------------------------------------------------------
# In-process store
# ----------------------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _MemTask:
    pending: dict[str, float] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)
    minutes: dict[int, dict[str, float]] = field(default_factory=dict)
    expired: int = 0


class MemoryStore:
    """The same state in this process (thread-safe): for the in-memory demo and unit tests."""

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
        self._events: deque[Entry] = deque(maxlen=cap)
        self._keys: deque[tuple[int, int]] = deque(maxlen=cap)
        self._last: tuple[int, int] = (0, 0)
        self._listeners: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self.attached = False  # a sink writes here (so the exporter of this process should serve it)

    def configure(self, settings: Settings) -> None:
        with self._lock:
            self.settings = settings
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

    def _next_id(self) -> tuple[int, int]:
        ms = int(time.time() * 1000)
        key = (ms, 0) if ms > self._last[0] else (self._last[0], self._last[1] + 1)
        self._last = key
        return key

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
            for op in batch.ops:
                name = self._fold(op.task_name)
                key = self._next_id()
                self._events.append(Entry(format_event_id(key), name, op.status, op.payload))
                self._keys.append(key)
                task = self._task(name)
                if op.status == STATUS_PENDING:
                    if op.member not in task.seen:
                        task.pending[op.member] = op.enqueued_at
                    continue
                task.pending.pop(op.member, None)
                task.seen.pop(op.member, None)  # re-inserted at the end: "seen" stays ordered by time
                task.seen[op.member] = now
                if op.status == STATUS_RUNNING:
                    if running is not None and op.track_running:
                        running[op.member] = (name, op.started_at)
                    continue
                if running is not None and op.track_running:
                    running.pop(op.member, None)
                bucket = task.minutes.setdefault(_minute(op.timestamp), {})
                for target in (task.totals, bucket):
                    target[op.status] = target.get(op.status, 0) + 1
                    if op.duration is not None:
                        target["dur_sum"] = target.get("dur_sum", 0.0) + op.duration
                        target["dur_n"] = target.get("dur_n", 0) + 1
            for name, member in batch.removals:
                task = self._task(self._fold(name))
                task.pending.pop(member, None)
                task.seen.pop(member, None)
                task.seen[member] = now
            cutoff = now - window
            for task in self._tasks.values():
                # dicts keep insertion order, and "seen" is kept ordered by time: trim from the front and stop at
                # the first fresh entry (no scan of the whole window per batch).
                seen = task.seen
                while seen:
                    member = next(iter(seen))
                    if seen[member] >= cutoff:
                        break
                    del seen[member]
                oldest_minute = _minute(now) - self.settings.stats_window_seconds // 60 - 2
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
            return list(self._events)[start : min(end, start + count)]

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
            return list(reversed(list(self._events)[start:end])) if end > start else []

    async def last_id(self) -> str:
        with self._lock:
            return format_event_id(self._keys[-1]) if self._keys else "0-0"

    async def first_id(self) -> str | None:
        with self._lock:
            return format_event_id(self._keys[0]) if self._keys else None

    async def task_names(self) -> set[str]:
        with self._lock:
            return set(self._tasks)

    async def aclose(self) -> None:
        pass


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


def open_store(settings: Settings) -> StateStore | None:
    """The store the exporter of this process should serve: Redis when configured; else the in-process store if
    a sink of this process writes to it (the in-memory demo); else none (no live feed, no queue metrics)."""
    if settings.redis_url:
        return RedisStore(settings)
    if _MEMORY is not None and _MEMORY.attached:
        return _MEMORY
    return None
