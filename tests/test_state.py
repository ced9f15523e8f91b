"""Shared task state: the Redis store (real redis-server) and the in-process store behave the same."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from taskiq_monitor.events import TaskEvent
from taskiq_monitor.settings import Settings
from taskiq_monitor.sinks.state import StateSink
from taskiq_monitor.state import MemoryStore, RedisStore, StateStore, parse_event_id
from tests.integration.servers import RedisServer, free_port, wait_for


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
        assert a.totals["dur_sum"] == pytest.approx(2.0)
        assert a.window["success"] == 1 and a.window["dur_n"] == 2
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
    settings = Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", state_buffer_events=100)
    sink = StateSink(settings, registry=CollectorRegistry())
    try:
        start = time.perf_counter()
        for i in range(1000):
            sink.emit(ev("pending", f"d{i}"))
        elapsed = time.perf_counter() - start
        assert elapsed < 0.5  # no I/O on the hot path
        assert sink.dropped == 900
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
