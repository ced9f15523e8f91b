"""Queue state and live feed with a real redis-server and real `taskiq-monitor worker` processes."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from taskiq import AsyncBroker
from taskiq.kicker import AsyncKicker
from websockets.asyncio.client import ClientConnection, connect

from taskiq_monitor.middleware import MonitoringMiddleware
from taskiq_monitor.settings import Settings
from tests.integration._servers import WorkerProcess, worker_process
from tests.integration.servers import RedisServer

A, B = "score_message_task", "detect_language_task"


@pytest.fixture
async def app_broker(redis_srv: RedisServer) -> AsyncIterator[AsyncBroker]:
    """The enqueuing side (a web app): the demo's Redis broker with our middleware, in the test process."""
    from taskiq_redis import ListQueueBroker

    settings = Settings(redis_url=redis_srv.url, demo_broker_url=redis_srv.url)
    # A bounded pool, as a web app has: 1000 concurrent kiqs wait for a connection instead of opening 1000 at once,
    # which a busy machine's redis-server does not accept in time ("Timeout connecting to server").
    broker = ListQueueBroker(
        redis_srv.url, queue_name=settings.demo_queue_name, max_connection_pool_size=50
    ).with_middlewares(MonitoringMiddleware(settings, registry=CollectorRegistry()))
    await broker.startup()
    try:
        yield broker
    finally:
        await broker.shutdown()


async def kiq(broker: AsyncBroker, task: str, *args: Any, **kwargs: Any) -> str:
    sent = await AsyncKicker(task, broker, {}).kiq(*args, **kwargs)
    return str(sent.task_id)


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def tasks_by_name(worker: WorkerProcess) -> dict[str, dict[str, Any]]:
    return {t["task_name"]: t for t in get_json(f"{worker.base}/api/v1/tasks")["tasks"]}


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def poll(predicate: Any, limit: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + limit
    last: Any = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(predicate)
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {limit}s waiting for {what}; last value {last!r}")


def stream_ids(redis_srv: RedisServer) -> list[str]:
    client = redis_srv.client()
    try:
        return [i.decode() for i, _ in client.xrange("{taskiq_monitor}:events")]
    finally:
        client.close()


async def test_pending_and_running_exact_while_queue_builds_and_drains(
    redis_srv: RedisServer, app_broker: AsyncBroker
) -> None:
    # The queue builds with no worker running…
    for i in range(6):
        await kiq(app_broker, A, i, sim={"sleep": 0.4})
    for i in range(4):
        await kiq(app_broker, B, i, sim={"sleep": 0.4})
    # …seen by an exporter that runs no worker (as `taskiq-monitor serve` would).
    import httpx

    from taskiq_monitor.service.app import create_app

    app = create_app(Settings(redis_url=redis_srv.url))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:

        async def snapshot() -> dict[str, Any]:
            return {t["task_name"]: t for t in (await client.get("/api/v1/tasks")).json()["tasks"]}

        deadline = time.monotonic() + 10
        while True:
            snap = await snapshot()
            if snap.get(A, {}).get("pending") == 6 and snap.get(B, {}).get("pending") == 4:
                break
            assert time.monotonic() < deadline, snap
            await asyncio.sleep(0.05)
        assert snap[A]["running"] == 0 and snap[B]["running"] == 0

    # Two worker processes, one task at a time each: the queue drains two by two.
    with worker_process(redis_srv.url, workers=2, extra_args=("--max-async-tasks", "1")) as worker:
        totals = {A: 6, B: 4}
        max_running = 0
        deadline = time.monotonic() + 60
        while True:
            snap = await asyncio.to_thread(tasks_by_name, worker)
            running = sum(snap[n]["running"] for n in totals)
            max_running = max(max_running, running)
            for name, total in totals.items():
                t = snap[name]
                # One Lua script applies each batch and one reads the snapshot: the invariant holds at every instant.
                assert t["pending"] + t["running"] + t["success_total"] == total, t
            assert running <= 2, snap
            if all(snap[n]["success_total"] == totals[n] for n in totals):
                break
            assert time.monotonic() < deadline, snap
            await asyncio.sleep(0.05)
        assert max_running == 2
        assert all(snap[n]["pending"] == 0 and snap[n]["running"] == 0 for n in totals)
        assert snap[A]["window"]["success_rate"] == 1.0
        metrics = await poll(lambda: scrape(worker.base), 10, "metrics")
        # The mean is of the attempts' own durations (each slept 0.4 s), the same ones the histogram observed: no
        # queue wait in it, nothing counted twice. How long a sleep takes on a loaded machine is not its business.
        by_status = (("status", "success"), ("task_name", A))
        assert metrics[("taskiq_task_duration_seconds_count", by_status)] == 6
        histogram_mean = metrics[("taskiq_task_duration_seconds_sum", by_status)] / 6
        assert snap[A]["avg_duration_seconds"] == pytest.approx(histogram_mean, rel=1e-6)
        assert snap[A]["avg_duration_seconds"] >= 0.4
        assert metrics[("taskiq_workers", ())] == 2
        assert metrics[("taskiq_tasks_pending", (("task_name", A),))] == 0
        assert metrics[("taskiq_monitor_state_up", ())] == 1


async def test_oldest_pending_age_grows_while_workers_stopped_then_expires(
    redis_srv: RedisServer, app_broker: AsyncBroker
) -> None:
    import httpx

    from taskiq_monitor.service.app import create_app

    enqueued_at = time.time()
    for i in range(3):
        await kiq(app_broker, A, i)
    enqueued_after = time.time()
    app = create_app(Settings(redis_url=redis_srv.url, pending_horizon_seconds=2.5))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:

        async def metrics() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
            text = (await client.get("/metrics")).text
            return {
                (s.name, tuple(sorted(s.labels.items()))): s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
            }

        key = ("taskiq_task_oldest_pending_age_seconds", (("task_name", A),))
        pending = ("taskiq_tasks_pending", (("task_name", A),))
        expired = ("taskiq_tasks_pending_expired_total", (("task_name", A),))

        async def bracketed() -> tuple[float, dict[tuple[str, tuple[tuple[str, str], ...]], float], float]:
            """A scrape with the clock read just before and after it: the exporter's "now" lies in between."""
            before = time.time()
            scraped = await metrics()
            return before, scraped, time.time()

        # The age is "now - enqueued_at", both read from the wall clock, so it is bracketed exactly (rounded to
        # the millisecond at most) by the clock readings around the enqueue and around the scrape, however slow
        # the machine.
        eps = 0.002
        before1, first, after1 = await bracketed()
        while first.get(pending) != 3:
            before1, first, after1 = await bracketed()
        assert before1 - enqueued_after - eps <= first[key] <= after1 - enqueued_at + eps
        await asyncio.sleep(1.0)
        before2, second, after2 = await bracketed()
        assert before2 - after1 - eps <= second[key] - first[key] <= after2 - before1 + eps  # it grows with the clock
        assert second[key] > first[key] + 0.7
        # A message that never starts (lost) leaves after the horizon, and is counted.
        deadline = time.monotonic() + 30
        while (m := await metrics())[pending] != 0:
            assert time.monotonic() < deadline, m
            await asyncio.sleep(0.1)
        assert m[expired] == 3 and m[key] == 0


async def read_events(
    ws: ClientConnection, want: int, got: list[dict[str, Any]], limit: float = 30
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + limit
    while len(got) < want:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"received {len(got)} of {want} events"
        frame = json.loads(await asyncio.wait_for(ws.recv(), remaining))
        if frame["type"] == "event":
            got.append(frame)
        else:
            assert frame["type"] in ("live", "ping"), frame
    return got


async def test_ws_reconnect_with_last_id_gets_every_missed_event_once_in_order(
    redis_srv: RedisServer, app_broker: AsyncBroker
) -> None:
    # Every state change is its own event here (no coalescing): the test counts them.
    with worker_process(redis_srv.url, workers=2, TASKIQ_MONITOR_EVENTS_COALESCE="false") as worker:
        got: list[dict[str, Any]] = []
        async with connect(f"{worker.ws_base}/ws/events") as ws:
            assert json.loads(await ws.recv())["type"] == "live"
            for i in range(30):
                await kiq(app_broker, A, i)
            await read_events(ws, 40, got)  # mid-stream: 90 events are on their way
        # Disconnected: more work happens.
        for i in range(30):
            await kiq(app_broker, B, i)
        await poll(lambda: len(stream_ids(redis_srv)) == 180, 30, "180 events in the stream")
        last_id = got[-1]["id"]
        async with connect(f"{worker.ws_base}/ws/events?last_event_id={last_id}") as ws:
            for i in range(10):  # and live events after the backlog
                await kiq(app_broker, A, 100 + i)
            await read_events(ws, 210, got)
        ids = [f["id"] for f in got]
        assert ids == stream_ids(redis_srv)  # every event, in stream order, none twice
        assert len(set(ids)) == 210
        per_task: dict[str, list[str]] = {}
        for f in got:
            per_task.setdefault(f["event"]["task_id"], []).append(f["event"]["status"])
        assert len(per_task) == 70
        for statuses in per_task.values():
            # One process's events keep their order; the app's "pending" and the worker's "running" come from two
            # processes and are ordered by their arrival in Redis (a busy app may record its "pending" last).
            assert sorted(statuses) == ["pending", "running", "success"]
            assert statuses.index("running") < statuses.index("success")


def stream_events(redis_srv: RedisServer) -> list[dict[str, Any]]:
    client = redis_srv.client()
    try:
        return [json.loads(fields[b"r"]) for _, fields in client.xrange("{taskiq_monitor}:events")]
    finally:
        client.close()


async def test_short_attempts_arrive_as_their_final_event_and_a_long_one_shows_running(
    redis_srv: RedisServer, app_broker: AsyncBroker
) -> None:
    # The default: a worker's sinks coalesce an attempt that finished before they took its running event.
    with worker_process(redis_srv.url, workers=1) as worker:
        long_id = await kiq(app_broker, B, 7, sim={"sleep": 3.0})
        await poll(lambda: tasks_by_name(worker)[B]["running"] == 1, 30, "the long task running")
        await poll(
            lambda: any(e["task_id"] == long_id and e["status"] == "running" for e in stream_events(redis_srv)),
            30,
            "the long task's running event",
        )
        short_ids = await asyncio.gather(*(kiq(app_broker, A, i) for i in range(200)))
        await poll(lambda: tasks_by_name(worker)[A]["success_total"] == 200, 60, "200 short tasks done")
        await poll(lambda: tasks_by_name(worker)[B]["success_total"] == 1, 30, "the long task done")
        await poll(
            lambda: sum(e["status"] == "success" for e in stream_events(redis_srv)) == 201,
            30,
            "every final event in the stream",
        )
        events = stream_events(redis_srv)
    by_task: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_task.setdefault(event["task_id"], []).append(event)
    assert [e["status"] for e in by_task[long_id] if e["status"] != "pending"] == ["running", "success"]
    runnings = 0
    for i, task_id in enumerate(short_ids):
        statuses = sorted(e["status"] for e in by_task[task_id])
        assert statuses in (["pending", "running", "success"], ["pending", "success"]), statuses
        runnings += "running" in statuses
        final = next(e for e in by_task[task_id] if e["status"] == "success")
        # What the running event held is in the final one.
        assert final["args"] == [i] and final["started_at"] is not None and final["queue_wait_seconds"] is not None
        assert final["started_at"] <= final["finished_at"]
    assert runnings < len(short_ids), "no short attempt was coalesced"


async def test_1000_concurrent_tasks_exact_counts(redis_srv: RedisServer, app_broker: AsyncBroker) -> None:
    from taskiq_monitor.demo.tasks import TASK_NAMES

    with worker_process(redis_srv.url, workers=2, extra_args=("--max-async-tasks", "600")) as worker:
        expected = {name: 0 for name in TASK_NAMES if name not in ("sync_calendar_events_task",)}
        names = sorted(expected)
        received: list[dict[str, Any]] = []
        async with connect(f"{worker.ws_base}/ws/events", max_size=2**22) as ws:
            assert json.loads(await ws.recv())["type"] == "live"
            args: dict[str, tuple[Any, ...]] = {
                "extract_knowledge_from_messages_task": ([1, 2],),
                "save_telegram_message": ({"update_id": 1},),
                "cleanup_expired_sessions_task": (),
                "rebuild_search_index_task": ("messages",),
                "generate_daily_report_task": ("2024-05-01",),
            }
            sends = []
            for i in range(1000):
                name = names[i % len(names)]
                expected[name] += 1
                # Each task runs long enough that all 1000 are running together even when sending them is slow
                # (a loaded machine): the concurrency asserted below is the worker's, not the sender's speed.
                sends.append(kiq(app_broker, name, *args.get(name, (i,)), sim={"sleep": 5.0}))
            await asyncio.gather(*sends)
            peak = 0
            deadline = time.monotonic() + 120
            while True:
                snap = await asyncio.to_thread(tasks_by_name, worker)
                peak = max(peak, sum(snap[n]["running"] for n in expected))
                if all(snap[n]["success_total"] == expected[n] for n in expected):
                    break
                assert time.monotonic() < deadline, {
                    n: (
                        expected[n],
                        snap[n]["pending"],
                        snap[n]["running"],
                        snap[n]["success_total"],
                        snap[n]["failed_total"],
                    )
                    for n in expected
                }
                await asyncio.sleep(0.1)
            assert peak >= 500, peak  # really concurrent
            assert all((snap[n]["pending"], snap[n]["running"]) == (0, 0) for n in expected)
            await read_events(ws, 3000, received, limit=60)
        assert len({f["id"] for f in received}) == 3000
        counts: dict[tuple[str, str], int] = {}
        for f in received:
            key = (f["event"]["task_name"], f["event"]["status"])
            counts[key] = counts.get(key, 0) + 1
        for name, n in expected.items():
            assert counts[(name, "pending")] == counts[(name, "running")] == counts[(name, "success")] == n
        metrics = scrape(worker.base)
        assert sum(v for (name, labels), v in metrics.items() if name == "taskiq_tasks_completed_total") == 1000
        assert metrics[("taskiq_monitor_state_events_total", (("result", "dropped"),))] == 0


async def expect_error(ws: ClientConnection, code: str) -> dict[str, Any]:
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if frame["type"] == "error":
            assert frame["code"] == code, frame
            return frame


async def test_ws_bad_input_gets_clear_error_frames(redis_srv: RedisServer, app_broker: AsyncBroker) -> None:
    from websockets.exceptions import ConnectionClosed

    with worker_process(redis_srv.url, workers=1) as worker:
        base = f"{worker.ws_base}/ws/events"
        for query, code in [
            ("status=exploded", "unknown_status"),
            ("task_name=no_such_task", "unknown_task_name"),
            ("last_event_id=yesterday", "malformed_id"),
        ]:
            async with connect(f"{base}?{query}") as ws:
                frame = await expect_error(ws, code)
                assert frame["message"]
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400
        async with connect(f"{base}?task_name={A}&status=failed,success") as ws:
            assert json.loads(await ws.recv())["type"] == "live"
            await ws.send("not json")
            await expect_error(ws, "invalid_json")
            await ws.send(json.dumps({"type": "subscribe"}))
            await expect_error(ws, "unknown_message_type")
            await ws.send(json.dumps({"type": "filter", "status": ["nope"]}))
            await expect_error(ws, "unknown_status")
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await ws.recv()) == {"type": "pong"}
            # The filters still hold: only failures/successes of A arrive.
            await kiq(app_broker, B, 1)
            await kiq(app_broker, A, 1, sim={"fail": "ValueError"})
            frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
            assert (frame["event"]["task_name"], frame["event"]["status"]) == (A, "failed")
            assert frame["event"]["error_type"] == "ValueError"
            await ws.send("x" * 10_000)
            await expect_error(ws, "message_too_large")
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
