"""The execution history in Redis: reads (pages, attempts of a task, per-minute series) and retention.

Written by ``lua/apply.lua`` in the same round trip as the state (``P`` = the key prefix)::

    P:h:rec               hash member -> record blob (store/history.py): one field per execution attempt
    P:h:<task>:<status>   zset member, score = the execution's first time in ms: the only index
    P:h:evicted           hash age/count -> executions deleted by retention (a counter)

Only the finest index exists (task type x status). A coarser filter (all types, all statuses, one of them) is a
k-way merge of the relevant indexes, each read newest first with ``LIMIT page + 1`` below the cursor: at most
types x 5 short range reads in one pipeline (a MULTI: the indexes as of one instant), never a scan, and every page
is complete. A page that needed a second round is checked with one atomic ``ZCOUNT`` per index over its score range
(an execution whose status changed between two rounds moved to another index), and merged again if one moved. A
global time index would cost about 100 bytes per execution more.
"""

from __future__ import annotations

import dataclasses
import time
from importlib import resources
from typing import Any

from taskiq_monitor.settings import Settings
from taskiq_monitor.store.history import (
    HISTORY_STATUSES,
    MAX_ATTEMPT_PROBE,
    Execution,
    HistoryPage,
    HistoryQuery,
    decode_record,
    encode_cursor,
    encode_member,
    execution,
)

EXPIRE_LUA = resources.files("taskiq_monitor.store").joinpath("lua", "history_expire.lua").read_text("utf-8")
EXPIRE_STEP = 1000  # executions deleted per script call: a few ms of Redis time, then others get their turn
_TIE_SLACK = 8  # extra entries read per index, for executions sharing the cursor's millisecond
_PAGE_TRIES = 3  # merges of one page while executions keep arriving in its range (then the last one is returned)


def _key_prefix(settings: Settings) -> str:
    return "{" + settings.state_key_prefix + "}"


def _as_bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _state_member(task_id: str, attempt: int) -> str:
    """An attempt's member in the state's pending and running sets, as the state sink writes it (UTF-8 only)."""
    return f"{task_id}:{attempt}".encode("utf-8", "backslashreplace").decode()


class RedisHistory:
    """Reads of the history, for the API (async), and its retention step (sync and async)."""

    def __init__(self, settings: Settings, aio: Any, sync: Any) -> None:
        self.settings = settings
        self.prefix = _key_prefix(settings)
        self.rec = f"{self.prefix}:h:rec"
        self.aio = aio
        self.sync = sync
        self._aio_expire = aio.register_script(EXPIRE_LUA)
        self._sync_expire = sync.register_script(EXPIRE_LUA)

    def index(self, task: str, status: str) -> str:
        return f"{self.prefix}:h:{task}:{status}"

    async def task_names(self) -> list[str]:
        return sorted(_text(n) for n in await self.aio.smembers(f"{self.prefix}:tasks"))

    # -- reads ---------------------------------------------------------------------------------------------------
    async def page(self, query: HistoryQuery) -> HistoryPage:
        names = sorted(query.task_names) if query.task_names is not None else await self.task_names()
        statuses = [s for s in HISTORY_STATUSES if query.statuses is None or s in query.statuses]
        keys = [self.index(t, s) for t in names for s in statuses]
        # The merge reads the indexes in rounds, each one atomic: an execution whose status changes between two
        # rounds moves to another index and could be read from both (shown twice) or from neither (skipped for good,
        # as the cursor passes it). A page of several rounds is kept once the indexes, in one atomic read, hold
        # exactly its rows in its score range.
        for _ in range(_PAGE_TRIES):
            found, rounds = await self._merge(keys, query)
            chosen = found[: query.limit]
            if rounds <= 1 or await self._complete(keys, query, chosen, more=len(found) > query.limit):
                break
        executions: list[Execution] = []
        if chosen:
            blobs = await self.aio.hmget(self.rec, [m for _, m in chosen])
            for (score, member), blob in zip(chosen, blobs, strict=True):
                if blob is not None:  # deleted by retention since the index was read
                    executions.append(execution(member, blob, score))
        next_cursor = encode_cursor(*chosen[-1]) if len(found) > query.limit and chosen else None
        return HistoryPage(await self._with_lost(executions), next_cursor)

    async def _complete(
        self, keys: list[str], query: HistoryQuery, chosen: list[tuple[int, bytes]], more: bool
    ) -> bool:
        """Whether the indexes now hold as many entries in the page's score range as the page has rows there
        (entries only move between indexes, so a move cannot change the count; a late arrival or a deletion can).
        The range's boundary milliseconds are left out: entries sharing them belong to a neighbouring page too.
        A first page's range ends at its newest row: executions recorded after the read are not missing from it
        (every index is first read from its top, so nothing newer than that row can have been passed over)."""
        if query.cursor is not None:
            high: Any = f"({query.cursor[0]}"
            if query.until_ms is not None and query.until_ms < query.cursor[0]:
                high = query.until_ms
        elif chosen:
            high = chosen[0][0]
        else:
            return True
        low: Any = "-inf" if query.since_ms is None else query.since_ms
        if more and chosen:
            low = f"({chosen[-1][0]}"
        rows = sum(
            1
            for score, _ in chosen
            if (query.cursor is None or score < query.cursor[0]) and (not more or score > chosen[-1][0])
        )
        async with self.aio.pipeline(transaction=True) as pipe:
            for key in keys:
                pipe.zcount(key, low, high)
            counts = await pipe.execute()
        return sum(int(n) for n in counts) == rows

    async def _with_lost(self, executions: list[Execution]) -> list[Execution]:
        """``executions``, those whose record says pending or running while the state no longer holds the attempt
        marked ``lost``: a running attempt missing from its worker's running set (``P:wrun:<host:pid>``, which
        expires with the worker's heartbeat: killed, crashed, cut off), a pending one missing from its task's
        pending set (expired by the horizon, or its later events dropped).

        Derived when read, not written: a record cannot be rewritten by whoever noticed a death (nobody may be
        watching when a worker dies), and the record, its worker's running set and the pending set are written by
        one script, so they agree at any instant. One pipelined lookup per such row (a page holds at most 50)."""
        candidates = [
            e
            for e in executions
            if (e.status == "pending" and e.fields.get("task_name"))
            or (e.status == "running" and e.fields.get("host") and e.fields.get("pid"))  # else: whose set to ask?
        ]
        if not candidates:
            return executions
        async with self.aio.pipeline(transaction=False) as pipe:
            for e in candidates:
                member = _state_member(e.task_id, e.attempt)
                if e.status == "running":
                    pipe.hexists(f"{self.prefix}:wrun:{e.fields['host']}:{e.fields['pid']}", member)
                else:
                    pipe.zscore(f"{self.prefix}:pending:{e.fields['task_name']}", member)
                    # A name beyond max_task_names is folded into "other" in the state (store/lua/apply.lua).
                    pipe.zscore(f"{self.prefix}:pending:other", member)
            replies = iter(await pipe.execute())
        lost: set[int] = set()
        for e in candidates:
            running = e.status == "running"
            held = bool(next(replies)) if running else (next(replies), next(replies)) != (None, None)
            if not held:
                lost.add(id(e))
        return [dataclasses.replace(e, lost=True) if id(e) in lost else e for e in executions]

    async def _merge(self, keys: list[str], query: HistoryQuery) -> tuple[list[tuple[int, bytes]], int]:
        """The ``limit + 1`` newest ``(score, member)`` below the cursor across ``keys`` (a lazy k-way merge), and
        the number of rounds it read.

        Every index is read in small chunks, newest first, each chunk continuing below the last entry read from it
        (by score and member, not by offset: writes meanwhile cannot shift it). An entry is taken only while every
        index that may still hold a newer one has a buffered head to compare with; an index whose buffer runs dry
        is read again (its chunk doubling), all of them in one pipeline per round."""
        want = query.limit + 1
        low: Any = "-inf" if query.since_ms is None else query.since_ms
        start = query.cursor
        bound: dict[str, tuple[int, bytes] | None] = dict.fromkeys(keys, start)
        chunk = dict.fromkeys(keys, max(2, -(-want // max(1, len(keys))) + 1))
        buffers: dict[str, list[tuple[int, bytes]]] = {k: [] for k in keys}  # newest last (pop from the end)
        open_keys = set(keys)  # may hold more entries than buffered
        out: list[tuple[int, bytes]] = []
        rounds = 0
        while len(out) < want:
            dry = [k for k in keys if k in open_keys and not buffers[k]]
            if dry:
                await self._read(dry, query.until_ms, low, bound, chunk, buffers, open_keys)
                rounds += 1
                continue
            heads = [k for k in keys if buffers[k]]
            if not heads:
                break
            best = max(heads, key=lambda k: buffers[k][-1])
            out.append(buffers[best].pop())
        return out, rounds

    async def _read(
        self,
        keys: list[str],
        until_ms: int | None,
        low: Any,
        bound: dict[str, tuple[int, bytes] | None],
        chunk: dict[str, int],
        buffers: dict[str, list[tuple[int, bytes]]],
        open_keys: set[str],
    ) -> None:
        # MULTI: the indexes as of one instant (a page read in one round needs no other check).
        async with self.aio.pipeline(transaction=True) as pipe:
            for key in keys:
                last = bound[key]
                high: Any = until_ms if until_ms is not None else "+inf"
                if last is not None:
                    high = last[0] if until_ms is None else min(until_ms, last[0])
                pipe.zrevrangebyscore(key, high, low, start=0, num=chunk[key] + _TIE_SLACK, withscores=True)
            replies = await pipe.execute()
        for key, reply in zip(keys, replies, strict=True):
            last = bound[key]
            fresh = [(int(score), _as_bytes(member)) for member, score in reply]
            # Equal scores come back by member, descending, like the tuples compare: keep those below the bound.
            fresh = [e for e in fresh if last is None or e < last]
            full = len(reply) == chunk[key] + _TIE_SLACK
            if full and not fresh:
                chunk[key] *= 4  # more entries share the bound's millisecond than one read holds: read wider
                continue
            if not full:
                open_keys.discard(key)
            if fresh:
                bound[key] = fresh[-1]
                buffers[key] = fresh[::-1]
            chunk[key] = min(chunk[key] * 2, 512)

    async def attempts(self, task_id: str) -> list[Execution]:
        """Every attempt of a task, by attempt (attempts 1..32 in one read, then on while they continue)."""
        out: list[Execution] = []
        first = 1
        while True:
            members = [encode_member(task_id, a) for a in range(first, first + MAX_ATTEMPT_PROBE)]
            blobs = await self.aio.hmget(self.rec, members)
            for member, blob in zip(members, blobs, strict=True):
                if blob is not None:
                    _, fields = decode_record(blob)
                    first_at = fields["enqueued_at"] or fields["started_at"] or 0.0
                    out.append(execution(member, blob, int(first_at * 1000)))
            if blobs[-1] is None:
                return await self._with_lost(out)
            first += MAX_ATTEMPT_PROBE

    async def series(self, minutes: int, now: float | None = None) -> tuple[int, dict[str, dict[str, list[int]]]]:
        """Finished executions per minute and task type (the state's per-minute counters), oldest first."""
        now = time.time() if now is None else now
        last = int(now // 60)
        first = last - minutes + 1
        names = await self.task_names()
        async with self.aio.pipeline(transaction=False) as pipe:
            for name in names:
                for minute in range(first, last + 1):
                    pipe.hmget(f"{self.prefix}:stats:{name}:{minute}", ["success", "failed", "retried"])
            replies = await pipe.execute()
        series: dict[str, dict[str, list[int]]] = {}
        at = 0
        for name in names:
            rows = replies[at : at + minutes]
            at += minutes
            series[name] = {
                status: [int(row[i] or 0) for row in rows] for i, status in enumerate(("success", "failed", "retried"))
            }
        return first * 60, series

    # -- retention -----------------------------------------------------------------------------------------------
    def _expire_args(self) -> list[Any]:
        s = self.settings
        return [self.prefix, int(s.history_retention_days * 86_400_000), s.history_max_executions, EXPIRE_STEP]

    def expire_step_sync(self) -> tuple[int, int, bool]:
        aged, counted, more = self._sync_expire(args=self._expire_args())
        return int(aged), int(counted), bool(more)

    async def expire_step(self) -> tuple[int, int, bool]:
        aged, counted, more = await self._aio_expire(args=self._expire_args())
        return int(aged), int(counted), bool(more)

    def counts_sync(self) -> tuple[int, dict[str, int]]:
        """Executions held, and executions evicted by reason (all processes: kept in Redis)."""
        with self.sync.pipeline(transaction=False) as pipe:
            pipe.hlen(self.rec)
            pipe.hgetall(f"{self.prefix}:h:evicted")
            size, evicted = pipe.execute()
        reasons = {"age": 0, "count": 0}
        for k, v in (evicted or {}).items():
            reasons[_text(k)] = int(v)
        return int(size), reasons
