"""The shared task state: pending and running tasks per type, worker heartbeats, the event stream of the live feed,
and the execution history.

Every process with ``MonitoringMiddleware`` writes (through :class:`taskiq_monitor.sinks.state.StateSink`); the
exporter reads (``taskiq_tasks_pending``, ``/api/v1/tasks``, ``/ws/events``). Two stores share one behaviour:

* :class:`RedisStore` (``TASKIQ_MONITOR_REDIS_URL``) — all processes and hosts see the same state. One Lua script
  applies a whole batch of events atomically, so the stream and the state never disagree.
* :class:`MemoryStore` — when no Redis is configured; only meaningful when tasks and exporter share a process (the
  in-memory demo). ``memory_store()`` is that process-wide instance.

Redis layout (``P`` = ``{taskiq_monitor}``, a hash tag). The scripts build their key names from the prefix
instead of declaring them as ``KEYS``, so Redis Cluster is not supported (use a standalone Redis or a primary with
replicas); the hash tag only keeps the keys together.::

    P:events              stream, fields t (task name), s (status), r (JSON record); XADD MAXLEN ~ N; with
                          loki_shipper=exporter, its consumer group ``loki`` (the exporter's Loki relay) is
                          created with it, at its start
    P:loki:loki:pos       the relay group's position among all entries ever added (lua/relay_read.lua)
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
    P:stats:<task>:h<hr>  the same per hour (TTL): a 24 h window reads 24 hours plus the minutes at its edges
    P:h:rec, P:h:<task>:<status>, P:h:evicted
                          the execution history: one record per attempt and its indexes (store/history_redis.py)

Each event costs O(log n) in Redis; the running set of a worker is rewritten whole after a Redis outage, so counts
heal instead of drifting (events older than that rewrite no longer change the running set: ``track_running``).
"Now" in the scripts is Redis's clock (``TIME``), so heartbeats and their expiry do not depend on host clocks.
"""

from __future__ import annotations

from taskiq_monitor.settings import Settings
from taskiq_monitor.store import memory as _memory
from taskiq_monitor.store.memory import MemoryStore, memory_store
from taskiq_monitor.store.model import (
    EVENT_ID_RE,
    FINISHED_STATUSES,
    Entry,
    Snapshot,
    StateOp,
    StateStore,
    StateWriter,
    TaskState,
    WriteBatch,
    format_event_id,
    parse_event_id,
    window_minutes,
)
from taskiq_monitor.store.redis_store import MAX_BLOCK_MS, RedisStore, RedisWriter

__all__ = [
    "EVENT_ID_RE",
    "FINISHED_STATUSES",
    "MAX_BLOCK_MS",
    "Entry",
    "MemoryStore",
    "RedisStore",
    "RedisWriter",
    "Snapshot",
    "StateOp",
    "StateStore",
    "StateWriter",
    "TaskState",
    "WriteBatch",
    "format_event_id",
    "memory_store",
    "open_store",
    "parse_event_id",
    "window_minutes",
]


def open_store(settings: Settings) -> StateStore | None:
    """The store the exporter of this process should serve: Redis when configured; else the in-process store if
    a sink of this process writes to it (the in-memory demo); else none (no live feed, no queue metrics)."""
    if settings.redis_url:
        return RedisStore(settings)
    mem = _memory.current()
    if mem is not None and mem.attached:
        return mem
    return None
