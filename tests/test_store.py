"""Shared task state: the Redis store (real redis-server) and the in-process store behave the same."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from taskiq_monitor.events import TaskEvent
from taskiq_monitor.settings import Settings
from taskiq_monitor.sinks.state import StateSink
from taskiq_monitor.store import (
    MAX_BLOCK_MS,
    MemoryStore,
    RedisStore,
    RedisWriter,
    StateOp,
    StateStore,
    WriteBatch,
    parse_event_id,
)
from taskiq_monitor.store.model import minute_of
from taskiq_monitor.store.redis_store import redis_kwargs
from tests.blocking import blocking_calls
from tests.integration.servers import RedisServer, UnixRedisServer, free_port, wait_for


@pytest.fixture(scope="module")
def redis_srv() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(params=["redis", "memory"])
def backend(request: pytest.FixtureRequest, redis_srv: RedisServer) -> Iterator[tuple[Settings, Any, StateStore]]:
    if request.param == "redis":
        redis_srv.client().flushall()
        settings = Settings(redis_url=redis_srv.url, pending_horizon_seconds=60)
        store: Any = RedisStore(settings)
        yield settings, None, store
        store.sync.close()
    else:
        settings = Settings(pending_horizon_seconds=60)
        mem = MemoryStore(settings)
        yield settings, mem, mem


def ev(status: str, task_id: str, task: str = "a", attempt: int = 1, **kw: Any) -> TaskEvent:
    now = time.time()
    kw.setdefault("enqueued_at", now)
    if status != "pending":
        kw.setdefault("started_at", now)
    return TaskEvent(status=status, task_id=task_id, task_name=task, timestamp=now, attempt=attempt, **kw)


def make_sink(settings: Settings, writer: Any) -> StateSink:
    return StateSink(settings, writer, registry=CollectorRegistry())


def flushed(sink: StateSink, n: int) -> None:
    wait_for(lambda: sink.written >= n, 5, f"{n} events written (written={sink.written}, failures={sink.failures})")


def test_pending_running_finished_transitions(backend: tuple[Settings, Any, StateStore]) -> None:
    settings, writer, store = backend
    sink = make_sink(settings, writer)
    try:
        for i in range(5):
            sink.emit(ev("pending", f"t{i}"))
        sink.emit(ev("pending", "b1", task="b"))
        sink.emit(ev("running", "t0"))
        sink.emit(ev("running", "t1"))
        sink.emit(ev("success", "t1", duration_seconds=0.5))
        sink.emit(ev("failed", "t0", duration_seconds=1.5, error_type="ValueError"))
        sink.emit(ev("running", "t2"))
        flushed(sink, 11)
        snap = store.snapshot_sync(with_stats=True)
        a, b = snap.tasks["a"], snap.tasks["b"]
        assert (a.pending, a.running, b.pending, b.running) == (2, 1, 1, 0)
        assert snap.workers == 1  # the sink saw a running event: it executes tasks
        assert a.totals["success"] == 1 and a.totals["failed"] == 1
        # FR-013: average duration = sum(duration) / count(success): the failed attempt's 1.5 s is not in it.
        assert a.totals["dur_sum"] == pytest.approx(0.5)
        assert a.window["success"] == 1 and a.window["dur_n"] == 1
    finally:
        sink.stop()
    # A clean shutdown removes the worker and its running tasks.
    snap = store.snapshot_sync()
    assert snap.workers == 0 and snap.tasks["a"].running == 0 and snap.tasks["a"].pending == 2


def test_late_pending_does_not_re_add_started_task(backend: tuple[Settings, Any, StateStore]) -> None:
    # The app's "pending" may reach the state after the worker's "running" (two processes, two buffers).
    settings, writer, store = backend
    sink = make_sink(settings, writer)
    try:
        sink.emit(ev("running", "x"))
        sink.emit(ev("success", "x"))
        sink.emit(ev("pending", "x"))
        flushed(sink, 3)
        assert store.snapshot_sync().tasks["a"].pending == 0
    finally:
        sink.stop()


def test_retry_re_adds_next_attempt(backend: tuple[Settings, Any, StateStore]) -> None:
    settings, writer, store = backend
    sink = make_sink(settings, writer)
    try:
        sink.emit(ev("pending", "r", attempt=1))
        sink.emit(ev("running", "r", attempt=1))
        sink.emit(ev("pending", "r", attempt=2))  # re-kicked by the retry middleware while attempt 1 runs
        sink.emit(ev("retried", "r", attempt=1))
        flushed(sink, 4)
        task = store.snapshot_sync(with_stats=True).tasks["a"]
        assert (task.pending, task.running, task.totals["retried"]) == (1, 0, 1)
        sink.emit(ev("running", "r", attempt=2))
        sink.emit(ev("success", "r", attempt=2))
        flushed(sink, 6)
        task = store.snapshot_sync().tasks["a"]
        assert (task.pending, task.running) == (0, 0)
    finally:
        sink.stop()


def test_pending_older_than_horizon_expires_and_is_counted(backend: tuple[Settings, Any, StateStore]) -> None:
    settings, writer, store = backend
    settings.pending_horizon_seconds = 30
    sink = make_sink(settings, writer)
    try:
        now = time.time()
        sink.emit(ev("pending", "old1", enqueued_at=now - 100))
        sink.emit(ev("pending", "old2", enqueued_at=now - 31))
        sink.emit(ev("pending", "new", enqueued_at=now - 5))
        flushed(sink, 3)
        task = store.snapshot_sync().tasks["a"]
        assert (task.pending, task.expired) == (1, 2)
        assert task.oldest_pending_at == pytest.approx(now - 5, abs=0.01)
        assert store.snapshot_sync().tasks["a"].expired == 2  # a counter: not counted twice
    finally:
        sink.stop()


def test_stream_keeps_order_and_ids(backend: tuple[Settings, Any, StateStore]) -> None:
    settings, writer, store = backend
    sink = make_sink(settings, writer)
    try:
        for i in range(20):
            sink.emit(ev("pending", f"s{i}"))
        flushed(sink, 20)

        async def read() -> list[Any]:
            return await store.read_after("0-0", 100, 0)

        entries = asyncio.run(read())
        assert [e.status for e in entries] == ["pending"] * 20
        keys = [parse_event_id(e.id) for e in entries]
        assert keys == sorted(set(keys))
        assert '"task_id":"s19"' in entries[-1].payload
        desc = asyncio.run(store.range_desc(f"({entries[10].id}", "-", 3))
        assert [e.id for e in desc] == [entries[9].id, entries[8].id, entries[7].id]
    finally:
        sink.stop()


def test_emit_is_cheap_and_never_raises_when_redis_is_down() -> None:
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", state_buffer_events=100, state_batch_events=100)
    sink = StateSink(settings, registry=CollectorRegistry())
    try:
        asyncio.run(sink.start())  # the flusher thread starts in the startup hook, not in an emit
        events = [ev("pending", f"d{i}") for i in range(1000)]
        assert blocking_calls(lambda: [sink.emit(e) for e in events]) == []  # no I/O, no wait on the hot path
        # Memory stays bounded: the buffer (100) plus at most the one batch (100) the flusher took and retries while
        # Redis is down — it fills that batch while emit() refills the buffer, so how much it took before the burst
        # ended depends on scheduling; the rest is dropped and counted.
        accepted = 1000 - sink.dropped
        assert 100 <= accepted <= 200
        wait_for(lambda: sink.failures >= 1, 10, "a failed write")
    finally:
        sink.stop(timeout=2)


def test_outage_buffers_then_recovers_with_exact_counts(tmp_path: Any) -> None:
    """Redis goes away (saving its data) and comes back: buffered events land, dropped ones are counted, and the
    pending/running counts are exact — dropped starts still leave the pending set."""
    server = RedisServer()
    try:
        settings = Settings(redis_url=server.url, state_buffer_events=6, heartbeat_seconds=0.2)
        sink = StateSink(settings, registry=CollectorRegistry())
        store = RedisStore(settings)
        before = [ev("pending", f"o{i}") for i in range(10)] + [ev("running", "o0"), ev("running", "o1")]
        for n, event in enumerate(before, 1):
            sink.emit(event)
            flushed(sink, n)  # the buffer holds 6 events: feed it at Redis's pace
        with contextlib.suppress(Exception):
            server.client().shutdown(save=True)
        server.proc.wait(10) if server.proc else None
        # While Redis is down: the buffer (6 events) fills, the rest is dropped.
        sink.emit(ev("success", "o0"))  # buffered
        for i in range(2, 9):
            sink.emit(ev("running", f"o{i}"))  # 5 buffered, the last 2 dropped
        sink.emit(ev("success", "o1"))  # dropped
        wait_for(lambda: sink.failures >= 1, 10, "the write to fail")
        assert sink.dropped == 3
        server.start()
        wait_for(lambda: sink.written >= 18, 20, f"buffered events written (written={sink.written})")

        def settled() -> bool:
            task = store.snapshot_sync().tasks["a"]
            return (task.pending, task.running) == (1, 7)

        # pending: o9 only (o7, o8 were dropped but their start still removed them from pending).
        # running: o2..o8 (o1's success was dropped, but the running set is resynced from the worker's own view).
        try:
            wait_for(settled, 10, "exact pending/running after recovery")
        except AssertionError:
            print(store.snapshot_sync(), sink.written, sink.dropped, sink.failures)
            raise
        sink.stop()
        store.sync.close()
    finally:
        server.cleanup()


# -- regressions: queue state under failures ---------------------------------------------------------------------
class FlakyWriter:
    """Wraps a real writer; ``down`` makes writes fail like an unreachable Redis; ``hook`` runs before each write."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = False
        self.hook: Any = None
        self.nows: list[float] = []

    def write(self, batch: WriteBatch) -> int:
        import redis

        self.nows.append(batch.now)
        if self.hook is not None:
            self.hook(batch)
        if self.down:
            raise redis.exceptions.ConnectionError("Redis is down (test)")
        return self.inner.write(batch) or 0

    def close(self) -> None:
        pass


def inner_writer(settings: Settings, mem: Any) -> Any:
    return mem if mem is not None else RedisWriter(settings)


def test_running_set_rewrite_is_not_undone_by_older_queued_events(backend: tuple[Settings, Any, StateStore]) -> None:
    """After an outage the running set is rewritten from the worker's own view; a `running` queued before that
    rewrite (whose `success` was dropped) must not be re-added on top of it."""
    settings, mem, store = backend
    settings.state_buffer_events = 3
    writer = FlakyWriter(inner_writer(settings, mem))
    sink = make_sink(settings, writer)
    try:
        sink.emit(ev("pending", "x0"))
        flushed(sink, 1)
        writer.down = True
        sink.emit(ev("pending", "x10"))  # the batch that fails and is retained
        wait_for(lambda: sink.failures >= 1, 5, "a failed write")
        sink.emit(ev("running", "x1"))  # buffered
        sink.emit(ev("pending", "x2"))
        sink.emit(ev("pending", "x3"))  # the buffer is full
        sink.emit(ev("success", "x1"))  # dropped
        assert sink.dropped == 1 and sink._running == {}
        writer.down = False
        flushed(sink, 5)
        wait_for(lambda: not sink._buffer and not sink._resync, 5, "the running set rewritten")
        task = store.snapshot_sync().tasks["a"]
        assert (task.running, task.pending) == (0, 4)  # x0, x10, x2, x3 pending; x1 left the queue
    finally:
        sink.stop()


def test_batch_retried_after_a_timeout_is_applied_once(backend: tuple[Settings, Any, StateStore]) -> None:
    settings, mem, store = backend
    inner = inner_writer(settings, mem)
    writer = FlakyWriter(inner)
    calls: list[str] = []

    def applied_then_timed_out(batch: WriteBatch) -> None:
        import redis

        calls.append(batch.batch_id)
        if len(calls) == 1 and batch.ops:
            inner.write(batch)  # Redis ran it, but the reply never came
            raise redis.exceptions.TimeoutError("Timeout reading from socket (test)")

    writer.hook = applied_then_timed_out
    sink = make_sink(settings, writer)
    try:
        sink.emit(ev("success", "x", duration_seconds=1.0))
        flushed(sink, 1)
        assert calls[0] == calls[1]  # the same batch retried
        task = store.snapshot_sync(with_stats=True).tasks["a"]
        assert task.totals["success"] == 1 and task.totals["dur_sum"] == pytest.approx(1.0)
        assert len(asyncio.run(store.read_after("0-0", 100, 0))) == 1
    finally:
        sink.stop()


def test_events_lost_at_shutdown_while_redis_is_down_are_counted() -> None:
    registry = CollectorRegistry()
    sink = StateSink(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"), registry=registry)
    for i in range(5):
        sink.emit(ev("pending", f"t{i}"))
    wait_for(lambda: sink.failures >= 1, 10, "a failed write")
    sink.stop(timeout=5)
    assert sink._thread is None and not sink._buffer
    assert sink.dropped == 5
    assert registry.get_sample_value("taskiq_monitor_state_events_total", {"result": "dropped"}) == 5


class HungWriter:
    """A store that takes the first batch and never answers (a hung Redis) until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, batch: WriteBatch) -> int:
        self.entered.set()
        self.release.wait(60)
        return 0

    def close(self) -> None:
        pass


@pytest.mark.parametrize("exiting", [False, True])
def test_events_still_waiting_when_shutdown_gives_up_on_a_hung_redis_are_counted(exiting: bool) -> None:
    registry = CollectorRegistry()
    writer = HungWriter()
    sink = StateSink(Settings(), writer, registry=registry)
    try:
        for i in range(3):
            sink.emit(ev("pending", f"t{i}"))
        assert writer.entered.wait(10), "the flusher never wrote"
        for i in range(3, 10):
            sink.emit(ev("pending", f"t{i}"))  # behind the hung write
        written_before = sink.written
        if exiting:
            sink.flush_at_exit(0.2)
        else:
            sink.stop(timeout=0.2)
        assert not sink._buffer and written_before == sink.written == 0
        # The 7 buffered are discarded either way; the 3 being written die with the process only at exit.
        lost = sink.dropped
        assert lost == (10 if exiting else 7)
        assert registry.get_sample_value("taskiq_monitor_state_events_total", {"result": "dropped"}) == lost
    finally:
        writer.release.set()


def test_the_buffer_gauge_shows_what_waits_for_the_store_and_empties_with_it() -> None:
    registry = CollectorRegistry()
    store = MemoryStore(Settings())
    down = threading.Event()

    class Outage:
        history_from_payload = True

        def write(self, batch: Any) -> int:
            if down.is_set():
                raise ConnectionError("Redis unreachable (test)")
            return store.write(batch)

        def close(self) -> None:
            pass

    def buffered() -> float | None:
        return registry.get_sample_value("taskiq_monitor_state_buffer_events")

    down.set()
    sink = StateSink(Settings(redis_url="redis://unused:1/0"), Outage(), registry=registry)
    try:
        sink.emit(ev("pending", "t0"))
        wait_for(lambda: sink.failures >= 1, 10, "a failed write")
        for i in range(1, 4):
            sink.emit(ev("pending", f"t{i}"))
        wait_for(lambda: buffered() == 3, 20, "the gauge showing the 3 events behind the retried batch")
        down.clear()
        wait_for(lambda: sink.written == 4, 20, "all 4 events written once Redis is back")
        sink.emit(ev("pending", "t4"))
        wait_for(lambda: sink.written == 5, 20, "the next event written")
        assert buffered() == 0
    finally:
        sink.stop()


def test_removals_recorded_while_the_flusher_drains_are_not_lost() -> None:
    # A stress guard (the race of copy-then-clear is too narrow to hit reliably): every dropped start must reach
    # the writer as a removal.
    class Recorder:
        def __init__(self) -> None:
            self.removals = 0
            self.ops = 0

        def write(self, batch: WriteBatch) -> int:
            self.removals += len(batch.removals)
            self.ops += len(batch.ops)
            return 0

        def close(self) -> None:
            pass

    recorder = Recorder()
    sink = make_sink(Settings(state_buffer_events=1), recorder)
    n = 100_000
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the flusher with emit as much as possible
    try:
        for i in range(n):
            sink.emit(ev("success", f"r{i}"))  # the buffer holds 1: nearly all are dropped -> removals
    finally:
        sys.setswitchinterval(interval)
    wait_for(lambda: recorder.ops + recorder.removals == n, 10, f"{n} events or removals ({vars(recorder)})")
    sink.stop()


def test_a_bad_event_is_isolated_dropped_and_counted_not_retried_forever(redis_srv: RedisServer) -> None:
    redis_srv.client().flushall()
    settings = Settings(redis_url=redis_srv.url)
    redis_srv.client().set("{taskiq_monitor}:pending:bad", "a string: ZADD fails with WRONGTYPE")

    class Picky:
        """Fails (permanently) on one event, client-side, like an encoding error."""

        def __init__(self) -> None:
            self.inner = RedisWriter(settings)

        def write(self, batch: WriteBatch) -> int:
            if any(op.member == "poison:1" for op in batch.ops):
                raise ValueError("cannot encode (test)")
            return self.inner.write(batch)

        def close(self) -> None:
            self.inner.close()

    store = RedisStore(settings)
    sink = make_sink(settings, Picky())
    try:
        sink.emit(ev("running", "abc\ud800"))  # a lone surrogate (a JSON-decoded task id): escaped, not fatal
        for i in range(20):
            sink.emit(ev("pending", f"ok{i}"))
            if i == 7:
                sink.emit(ev("pending", "poison"))
                sink.emit(ev("pending", "p", task="bad"))  # rejected by Redis (WRONGTYPE)
        wait_for(lambda: sink.written == 21 and sink.dropped == 2, 10, "good events written, bad ones dropped")
        assert sink.failures == 0  # nothing was retried as if Redis were down
        task = store.snapshot_sync().tasks["a"]
        assert (task.pending, task.running) == (20, 1)
    finally:
        sink.stop()
        store.sync.close()


def test_heartbeats_use_the_redis_clock(redis_srv: RedisServer) -> None:
    redis_srv.client().flushall()
    settings = Settings(redis_url=redis_srv.url)
    writer = RedisWriter(settings)
    store = RedisStore(settings)
    try:
        # A worker whose clock is an hour behind: its heartbeat must still count as fresh.
        writer.write(WriteBatch(now=time.time() - 3600, worker="host:1"))
        client = redis_srv.client()
        before = float(client.time()[0])
        snap = store.snapshot_sync()
        after = float(client.time()[0]) + 1  # TIME's seconds are truncated
        assert snap.workers == 1
        assert before <= snap.taken_at <= after  # taken on Redis's clock, not the (skewed) worker's
    finally:
        writer.close()
        store.sync.close()


def test_retried_heartbeat_carries_the_time_of_the_attempt(backend: tuple[Settings, Any, StateStore]) -> None:
    settings, mem, _store = backend
    settings.heartbeat_seconds = 0.05
    writer = FlakyWriter(inner_writer(settings, mem))
    writer.down = True
    sink = make_sink(settings, writer)
    try:
        sink.emit(ev("running", "hb"))
        wait_for(lambda: len(writer.nows) >= 3, 10, "retries")
        assert writer.nows[2] > writer.nows[0]
    finally:
        writer.down = False
        sink.stop()


def test_blocking_reader_has_a_read_timeout(redis_srv: RedisServer) -> None:
    store = RedisStore(Settings(redis_url=redis_srv.url))
    try:
        kwargs = store.aio_blocking.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] is not None and kwargs["socket_timeout"] > MAX_BLOCK_MS / 1000
        assert kwargs["socket_keepalive"] and kwargs["health_check_interval"]
    finally:
        store.sync.close()


def test_tcp_only_options_are_passed_for_tcp_urls_only() -> None:
    for url in ("redis://localhost:6379/0", "rediss://localhost:6380/0"):
        assert redis_kwargs(Settings(redis_url=url))["socket_keepalive"] is True, url
    assert "socket_keepalive" not in redis_kwargs(Settings(redis_url="unix:///run/redis.sock?db=0"))


def test_unix_socket_url_serves_the_workers_writes_and_the_exporters_reads() -> None:
    # redis-py's unix socket connection rejects TCP options: with them, every command of every client failed.
    server = UnixRedisServer()
    settings = Settings(redis_url=server.url)
    sink = StateSink(settings, registry=CollectorRegistry())  # the workers' writer (RedisWriter)
    store = RedisStore(settings)
    try:
        sink.emit(ev("pending", "u1"))
        sink.emit(ev("running", "u2"))
        flushed(sink, 2)
        snap = store.snapshot_sync()
        assert snap.tasks["a"].pending == 1 and snap.workers == 1
        assert store.history_counts_sync()[0] == 2

        async def reads() -> tuple[int, int, set[str]]:
            try:
                pending = (await store.snapshot()).tasks["a"].pending
                streamed = await store.read_after("0-0", 10, 100)  # the live feed's blocking client
                return pending, len(streamed), await store.task_names()
            finally:
                await store.aclose()

        assert asyncio.run(reads()) == (1, 2, {"a"})
    finally:
        sink.stop()
        store.sync.close()
        server.cleanup()


def test_task_names_are_capped_and_fold_into_other(backend: tuple[Settings, Any, StateStore]) -> None:
    settings, mem, store = backend
    settings.max_task_names = 2
    writer = inner_writer(settings, mem)
    writer.write(WriteBatch(now=time.time(), task_names=["registered"]))
    sink = make_sink(settings, writer)
    try:
        for i, name in enumerate(["registered", "u1", "u2", "u3", "u4", "u1"]):
            sink.emit(ev("pending", f"{name}-{i}", task=name))
        flushed(sink, 6)
        tasks = store.snapshot_sync().tasks
        assert set(tasks) == {"registered", "u1", "u2", "other"}
        assert tasks["other"].pending == 2 and tasks["u1"].pending == 2
    finally:
        sink.stop()


def test_memory_store_write_does_not_scan_the_reorder_window() -> None:
    mem = MemoryStore(Settings())
    now = time.time()

    def op(status: str, i: int) -> StateOp:
        return StateOp(status, "a", f"id{i}:1", now, now, now, 0.1 if status == "success" else None, "{}")

    for k in range(0, 100_000, 1000):
        mem.write(WriteBatch(now=now, ops=[op("running", i) for i in range(k, k + 1000)]))
    seen = mem._tasks["a"].seen = _CountingDict(mem._tasks["a"].seen)
    for i in range(200):
        mem.write(WriteBatch(now=now, ops=[op("success", i)]))
    assert seen.visited <= 2 * 200  # entries looked at by the trim; a scan visited all 100k per batch (~1.6 ms)
    # Still trimmed: entries older than the window go, also those re-seen (moved to the end).
    mem.write(WriteBatch(now=now + 1, ops=[op("success", 99_999)]))
    mem.write(WriteBatch(now=now + settings_window() + 0.5, ops=[]))
    assert list(mem._tasks["a"].seen) == ["id99999:1"]


def test_memory_store_write_ages_out_minute_buckets_once_a_minute_not_at_every_batch() -> None:
    mem = MemoryStore(Settings())
    now = time.time()
    window = Settings().stats_window_seconds // 60

    def op(i: int) -> StateOp:
        return StateOp("success", "a", f"id{i}:1", now, now, now, 0.1, "{}")

    mem.write(WriteBatch(now=now, ops=[op(0)]))
    task = mem._tasks["a"]
    current = minute_of(now)
    # A day of buckets, as a store that has run for a day holds; the two oldest fall outside the window.
    minutes = _CountingMinutes({m: {"success": 1} for m in range(current - window - 3, current + 1)})
    task.minutes = minutes
    for i in range(1, 101):
        mem.write(WriteBatch(now=now, ops=[op(i)]))
    assert minutes.visited == 0  # the minute was trimmed already; a scan visited 1,444 buckets per batch
    mem.write(WriteBatch(now=now + 60, ops=[op(101)]))  # the next minute: aged out, once
    assert minutes.visited == window + 4  # each bucket looked at once
    assert min(task.minutes) == minute_of(now + 60) - window - 2


class _CountingMinutes(dict[int, dict[str, float]]):
    """Counts the buckets that iterating it yields."""

    visited = 0

    def __iter__(self) -> Iterator[int]:
        for key in super().__iter__():
            self.visited += 1
            yield key


class _CountingDict(dict[str, float]):
    """Counts the entries that iterating it yields (``next(iter(d))`` counts one)."""

    visited = 0

    def __iter__(self) -> Iterator[str]:
        for key in super().__iter__():
            self.visited += 1
            yield key

    def keys(self) -> Any:
        return list(iter(self))

    def values(self) -> Any:
        return [self[key] for key in self]

    def items(self) -> Any:
        return [(key, self[key]) for key in self]


def settings_window() -> float:
    return Settings().reorder_window_seconds


def test_late_pending_from_another_process_after_success_leaves_pending_zero(
    backend: tuple[Settings, Any, StateStore],
) -> None:
    # The middleware may emit "pending" after the send (post_send): the worker's running/success can land first.
    settings, mem, store = backend
    worker = make_sink(settings, inner_writer(settings, mem))
    app = make_sink(settings, inner_writer(settings, mem))
    try:
        worker.emit(ev("running", "late"))
        worker.emit(ev("success", "late", duration_seconds=0.1))
        flushed(worker, 2)
        app.emit(ev("pending", "late"))
        flushed(app, 1)
        task = store.snapshot_sync().tasks["a"]
        assert (task.pending, task.running) == (0, 0)
    finally:
        worker.stop()
        app.stop()


# -- live feed units ---------------------------------------------------------------------------------------------
def test_parse_event_id_rejects_parts_beyond_64_bits() -> None:
    assert parse_event_id(f"{2**64 - 1}-{2**64 - 1}") == (2**64 - 1, 2**64 - 1)
    for bad in (f"{2**64}-0", f"0-{2**64}", "99999999999999999999-0"):
        with pytest.raises(ValueError, match="at most"):
            parse_event_id(bad)


# -- the flusher gathers events while they flow --------------------------------------------------------------------
class CountingWriter:
    """A real in-process store that counts the batches written to it."""

    def __init__(self, settings: Settings) -> None:
        self.store = MemoryStore(settings)
        self.sizes: list[int] = []

    def write(self, batch: WriteBatch) -> int:
        if batch.ops:
            self.sizes.append(len(batch.ops))
        return self.store.write(batch)

    def close(self) -> None:
        pass


def test_flowing_events_are_gathered_into_a_few_writes_not_one_per_event() -> None:
    settings = Settings(state_flush_interval_seconds=1.0)
    writer = CountingWriter(settings)
    sink = make_sink(settings, writer)
    try:
        for i in range(100):
            sink.emit(ev("pending", f"t{i}"))
            time.sleep(0.002)  # the GIL is free between events: a flusher woken by each would write each alone
        flushed(sink, 100)
        # The first event wakes the idle flusher; the others wait for the end of an interval, together (one or two
        # intervals pass while they are emitted, three on a very loaded machine).
        assert sum(writer.sizes) == 100
        assert len(writer.sizes) <= 4, writer.sizes
    finally:
        sink.stop()


def test_the_first_event_after_a_quiet_spell_wakes_the_idle_flusher() -> None:
    # Neither a heartbeat nor a gathering interval would write it within the deadline: only the wake from emit.
    settings = Settings(heartbeat_seconds=600, worker_ttl_seconds=1800)
    writer = CountingWriter(settings)
    sink = make_sink(settings, writer)
    try:
        sink.emit(ev("pending", "first"))
        flushed(sink, 1)
        wait_for(lambda: sink._idle, 10, "the flusher idle after a quiet interval")
        sink.emit(ev("pending", "second"))
        flushed(sink, 2)
    finally:
        sink.stop()


def test_a_full_batch_wakes_a_gathering_flusher_before_its_interval() -> None:
    settings = Settings(state_batch_events=50, heartbeat_seconds=600, worker_ttl_seconds=1800)
    writer = CountingWriter(settings)
    sink = make_sink(settings, writer)
    sink._interval = 3600.0  # once gathering, only a full batch can wake the flusher within the test
    try:
        sink.emit(ev("pending", "first"))  # wakes the idle flusher, which then gathers for an hour
        flushed(sink, 1)
        for i in range(120):
            sink.emit(ev("pending", f"t{i}"))
        flushed(sink, 101)  # two full batches, long before the hour
        assert writer.sizes[1:3] == [50, 50], writer.sizes
    finally:
        sink.stop()


def test_the_in_process_store_keeps_the_event_line_as_the_record_and_reads_it_as_redis_reads_its_blob(
    redis_srv: RedisServer,
) -> None:
    from taskiq_monitor.store.history import FORMAT_ZLIB, encode_member

    redis_srv.client().flushall()
    traceback = "Traceback (most recent call last):\n" + "  File 'x.py', line 1, in f\n" * 20
    failed = ev(
        "failed",
        "h1",
        enqueued_at=1_764_000_000.25,
        started_at=1_764_000_001.5,
        finished_at=1_764_000_002.75,
        duration_seconds=1.25,
        queue_wait_seconds=1.25,
        args=[1, "a"],
        kwargs={"user": "ann"},
        labels={"queue": "q"},
        error_type="ValueError",
        error_message="bad",
        traceback=traceback,
        host="h",
        pid=7,
        trace_id="ab" * 16,
    )
    member = encode_member("h1", 1)
    memory = MemoryStore(Settings())
    details = []
    for settings, writer in ((Settings(), memory), (Settings(redis_url=redis_srv.url), None)):
        sink = make_sink(settings, writer)
        try:
            sink.emit(failed)
            flushed(sink, 1)
        finally:
            sink.stop()
        store: Any = memory if writer is not None else RedisStore(settings)
        (execution,) = asyncio.run(store.history_attempts("h1"))
        details.append(execution.detail())
    # In process: the very string of the stream entry, not an encoded copy of it.
    line = memory.history.records[member][3]
    assert isinstance(line, str) and any(payload is line for _name, _status, payload in memory._events)
    # In Redis: an encoded, compressed blob.
    (key,) = redis_srv.client().keys("*h:rec")
    blob = redis_srv.client().hget(key, member)
    assert blob[:2] == b"f" + FORMAT_ZLIB.encode()
    assert details[0] == details[1] and details[0]["status"] == "failed" and details[0]["kwargs"] == {"user": "ann"}


def test_an_attempt_finished_before_the_flusher_took_it_is_written_once_as_its_final_event(
    backend: tuple[Settings, Any, StateStore],
) -> None:
    from taskiq import TaskiqMessage, TaskiqResult

    from taskiq_monitor.middleware import ENQUEUED_AT_LABEL, MonitoringMiddleware

    settings, writer, store = backend
    sink = make_sink(settings, writer)
    middleware = MonitoringMiddleware(settings, registry=CollectorRegistry(), sinks=[sink])
    sink._interval = 3600.0  # once gathering, the flusher writes again only when stopped
    enqueued = time.time() - 0.5
    try:
        sink.emit(ev("pending", "warm-up"))  # wakes the idle flusher, which then gathers for an hour
        flushed(sink, 1)
        for task_id in ("short", "long"):
            message = TaskiqMessage(
                task_id=task_id, task_name="a", labels={ENQUEUED_AT_LABEL: enqueued}, args=[1], kwargs={"token": "s"}
            )
            middleware.pre_execute(message)
            if task_id == "short":
                middleware.post_execute(message, TaskiqResult(is_err=False, return_value=None, execution_time=0.1))
    finally:
        sink.stop()  # writes what was gathered

    async def read() -> list[Any]:
        return await store.read_after("0-0", 100, 0)

    entries = [json.loads(e.payload) for e in asyncio.run(read())]
    assert [(e["task_id"], e["status"]) for e in entries] == [
        ("warm-up", "pending"),
        ("short", "success"),
        ("long", "running"),
    ]
    short = entries[1]
    assert short["started_at"] is not None and short["queue_wait_seconds"] == pytest.approx(0.5, abs=0.4)
    assert short["args"] == [1] and short["kwargs"] == {"token": "[REDACTED]"}
    assert store.snapshot_sync(with_stats=True).tasks["a"].totals["success"] == 1


def test_a_final_event_refused_by_a_full_buffer_leaves_its_running_event_to_be_written() -> None:
    from taskiq import TaskiqMessage, TaskiqResult

    from taskiq_monitor.middleware import MonitoringMiddleware

    settings = Settings(state_buffer_events=1, heartbeat_seconds=600, worker_ttl_seconds=1800)
    writer = CountingWriter(settings)
    sink = make_sink(settings, writer)
    middleware = MonitoringMiddleware(settings, registry=CollectorRegistry(), sinks=[sink])
    sink._interval = 3600.0
    try:
        sink.emit(ev("pending", "warm-up"))  # wakes the idle flusher, which then gathers for an hour
        flushed(sink, 1)
        sink._full = 10**9  # and nothing wakes it before it is stopped
        message = TaskiqMessage(task_id="t1", task_name="a", labels={}, args=[], kwargs={})
        middleware.pre_execute(message)  # the running handle takes the buffer's one place
        middleware.post_execute(message, TaskiqResult(is_err=False, return_value=None, execution_time=0.1))
        assert sink.dropped == 1  # the final handle: no place left
    finally:
        sink.stop()

    async def read() -> list[Any]:
        return await writer.store.read_after("0-0", 100, 0)

    entries = [json.loads(e.payload) for e in asyncio.run(read())]
    # Not coalesced into a final event that never came: the attempt still shows in the feed.
    assert [(e["task_id"], e["status"]) for e in entries] == [("warm-up", "pending"), ("t1", "running")]


def test_running_set_snapshots_taken_while_events_flow_agree_with_what_runs() -> None:
    """emit() and the flusher share the running set without a lock. Snapshots are forced all along while attempts
    start and finish, threads switching often; then, snapshots over, more attempts start and finish, which only the
    events behind the last snapshot's marker can record. The store's running set is then exactly the attempts that
    never finished: none lost, none come back."""
    settings = Settings(state_buffer_events=100_000, heartbeat_seconds=600, worker_ttl_seconds=1800)
    store = MemoryStore(settings)
    sink = make_sink(settings, store)
    sink._interval = 0.0005  # many small batches, each a chance to interleave
    stop = threading.Event()
    snapshots = 0

    def force_snapshots() -> None:
        nonlocal snapshots
        while not stop.is_set():
            sink._resync = True
            snapshots += 1
            time.sleep(0.0002)

    open_attempts: list[str] = []
    emitted = 0

    def attempts(first: int, count: int) -> None:
        nonlocal emitted
        for i in range(first, first + count):
            sink.emit(ev("running", f"r{i}"))
            open_attempts.append(f"r{i}")
            emitted += 1
            if i % 3:  # two of three finish, some at once and some later
                sink.emit(ev("success", open_attempts.pop(i % 2 - 1)))
                emitted += 1

    forcer = threading.Thread(target=force_snapshots, daemon=True)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: the interleavings a lock would have excluded
    try:
        forcer.start()
        attempts(0, 6000)
        stop.set()
        forcer.join()
        wait_for(lambda: not sink._buffer and not sink._resync and sink.written == emitted, 30, "the flow written")
        attempts(6000, 600)
        wait_for(lambda: not sink._buffer and sink.written == emitted, 30, "the last attempts written")
        assert snapshots > 10 and not sink._resync and sink._markers == 0
        assert store.snapshot_sync().tasks["a"].running == len(open_attempts) == 2200  # before stop(): it leaves
    finally:
        sys.setswitchinterval(interval)
        stop.set()
        sink.stop()
