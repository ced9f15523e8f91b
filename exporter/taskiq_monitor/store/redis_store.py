"""The Redis store: the writer of the sink's flusher thread and the exporter's reader.

The Lua scripts are package resources (``lua/apply.lua``, ``lua/snapshot.lua``); see the package docstring for
the key layout.
"""

from __future__ import annotations

import contextlib
import json
import time
from importlib import resources
from typing import Any

from taskiq_monitor.settings import Settings
from taskiq_monitor.store.history import Execution, HistoryPage, HistoryQuery
from taskiq_monitor.store.history_redis import RedisHistory
from taskiq_monitor.store.model import Entry, Snapshot, TaskState, WriteBatch


def lua_script(name: str) -> str:
    return resources.files("taskiq_monitor.store").joinpath("lua", name).read_text(encoding="utf-8")


# Every "now" of the scripts is Redis's own clock (TIME): heartbeats written by workers and pruned by exporters,
# and the reorder window, must not depend on how well the hosts' clocks agree. Event times (enqueued_at, the
# stats minute) stay the clocks of the processes that recorded them.
APPLY_LUA = lua_script("apply.lua")
SNAPSHOT_LUA = lua_script("snapshot.lua")


# The consumer group of the exporter's Loki relay (service/loki_relay.py, lua/relay_read.lua). Workers configured for
# it (loki_shipper=exporter) create it with the stream, at its start: a stream that begins anew (a first deployment, a
# Redis restarted empty while no exporter ran) then has every record shipped, not only those written after the first
# exporter's first read.
RELAY_GROUP = "loki"


def key_prefix(settings: Settings) -> str:
    return "{" + settings.state_key_prefix + "}"


def _fmt(value: float) -> str:
    return repr(float(value))


def apply_args(settings: Settings, batch: WriteBatch) -> list[str | bytes]:
    """ARGV of ``APPLY_LUA`` for one batch."""
    running = batch.resync_running or {}
    args: list[str | bytes] = [
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
        RELAY_GROUP if settings.loki_shipper == "exporter" else "",
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
            op.history_member,
            op.history_record,
            str(op.history_score),
        )
    for task, member in batch.removals:
        args += (task, member)
    args += batch.task_names
    return args


# The longest XREAD BLOCK of the live feed; its connection's read timeout is this plus a margin, so a half-open
# connection (a Redis host that vanished without a FIN) is noticed instead of freezing the feed forever.
MAX_BLOCK_MS = 5000
_BLOCKING_MARGIN = 5.0


# Options of TCP connections only: redis-py's UnixDomainSocketConnection rejects them (a ``unix://`` URL failed every
# command with "unexpected keyword argument 'socket_keepalive'"). Keepalive finds a TCP peer that vanished without a
# FIN; a local socket's peer cannot vanish that way.
_TCP_SCHEMES = ("redis://", "rediss://")
_TCP_ONLY = {"socket_keepalive": True}


def redis_kwargs(settings: Settings, *, socket_timeout: float = 5.0) -> dict[str, Any]:
    """The options of every Redis client of the package (workers' writer, exporter's readers, Loki relay), for
    ``settings.redis_url``'s transport."""
    # Bounded socket timeouts: a hung Redis must neither hang a scrape nor the flusher thread forever.
    kwargs: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": 3.0,
        "health_check_interval": 30,
    }
    if (settings.redis_url or "").startswith(_TCP_SCHEMES):
        kwargs.update(_TCP_ONLY)
    return kwargs


class RedisWriter:
    """Applies batches with one EVALSHA (a pipeline of one command); used by the sink's flusher thread."""

    def __init__(self, settings: Settings) -> None:
        import redis

        if not settings.redis_url:
            raise ValueError("a Redis state store needs settings.redis_url")
        self.settings = settings
        self.client = redis.Redis.from_url(settings.redis_url, **redis_kwargs(settings))
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


def stale_connection_retry() -> Any:
    """The retry policy of the package's asyncio clients (the exporter's, ``brokers.ListQueueBroker``'s): a command
    that meets a closed connection is sent once more, on a new one.

    After a restart of Redis, an idle pooled connection still holds the socket the old server closed, and redis-py's
    asyncio pool hands it out unchecked; without a retry (a client built from a URL, or on a pool of its own, has
    none) the first command after every restart failed — a 503 of the API, a live-feed client refused, a ``.kiq()``
    raising SendTaskError — and logged an outage that was over. Only connection errors are retried, at once and
    once: a timeout (a hung Redis) is not, so a command still gives up within its socket timeout, and a Redis that is
    really down fails the retry's connect at once. The exporter's commands are reads, and writes that can be
    repeated (the snapshot's and retention's sweeps)."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError

    return Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))


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
        self.sync = redis.Redis.from_url(settings.redis_url, **redis_kwargs(settings))
        self._sync_snapshot = self.sync.register_script(SNAPSHOT_LUA)
        self.aio = aioredis.Redis.from_url(settings.redis_url, retry=stale_connection_retry(), **redis_kwargs(settings))
        self._aio_snapshot = self.aio.register_script(SNAPSHOT_LUA)
        self.history = RedisHistory(settings, self.aio, self.sync)
        # A separate connection pool for blocking XREADs: they must not starve the API's requests.
        self.aio_blocking = aioredis.Redis.from_url(
            settings.redis_url,
            retry=stale_connection_retry(),
            **redis_kwargs(settings, socket_timeout=MAX_BLOCK_MS / 1000 + _BLOCKING_MARGIN),
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

    async def history_page(self, query: HistoryQuery) -> HistoryPage:
        return await self.history.page(query)

    async def history_attempts(self, task_id: str) -> list[Execution]:
        return await self.history.attempts(task_id)

    async def history_series(self, minutes: int) -> tuple[int, dict[str, dict[str, list[int]]]]:
        return await self.history.series(minutes)

    async def history_expire_step(self) -> tuple[int, int, bool]:
        return await self.history.expire_step()

    def history_counts_sync(self) -> tuple[int, dict[str, int]]:
        return self.history.counts_sync()

    async def aclose(self) -> None:
        for client in (self.aio, self.aio_blocking):
            with contextlib.suppress(Exception):
                await client.aclose()
        with contextlib.suppress(Exception):
            self.sync.close()
