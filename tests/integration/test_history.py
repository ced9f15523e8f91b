"""The execution history against a real redis-server: complete pages, stable cursors, retention, restarts, outages."""

from __future__ import annotations

import asyncio
import contextlib
import time
import urllib.parse
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from taskiq_monitor.events import MAX_RECORDED_TASK_ID_CHARS, TaskEvent, bounded_task_id
from taskiq_monitor.service.app import create_app
from taskiq_monitor.service.history import MAX_TASK_ID_CHARS, HistoryCollector
from taskiq_monitor.settings import Settings
from taskiq_monitor.sinks.state import StateSink
from taskiq_monitor.store import RedisStore, RedisWriter, WriteBatch, history_redis
from taskiq_monitor.store.history import HistoryQuery
from tests.integration.redis_events import finished, write_events
from tests.integration.servers import RedisServer, wait_for

DAY = 86400.0
TYPES = [f"tasks:type_{i}" for i in range(15)]


def fill(url: str, events: list[TaskEvent], batch: int = 2000, **settings: Any) -> None:
    write_events(Settings(redis_url=url, stream_max_events=1000, **settings), events, batch)


def client(url: str, **settings: Any) -> httpx.AsyncClient:
    app = create_app(Settings(redis_url=url, **settings))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x")


async def all_pages(http: httpx.AsyncClient, params: dict[str, Any]) -> tuple[list[str], int]:
    ids: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        body = (
            await http.get("/api/v1/executions", params={**params, **({"cursor": cursor} if cursor else {})})
        ).json()
        pages += 1
        rows = body["executions"]
        assert body["next_cursor"] is None or len(rows) == params.get("limit", 50)  # never a short page mid-way
        ids += [r["task_id"] for r in rows]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids, pages


async def test_sparse_filter_returns_exactly_its_matches_among_100k_executions(redis_srv: RedisServer) -> None:
    now = time.time()
    events = [finished(i, now - (i % 30) * DAY - i / 1000, TYPES[i % 15]) for i in range(100_000)]
    rare = {3: now - 1 * DAY, 77_777: now - 3 * DAY, 99_999: now - 6 * DAY}  # the only failed runs of type_14
    for i, at in rare.items():
        events[i] = finished(i, at, "tasks:type_14", "failed")
    fill(redis_srv.url, events)
    async with client(redis_srv.url) as http:
        week = {"task_name": "tasks:type_14", "status": "failed", "since": now - 7 * DAY, "until": now}
        ids, pages = await all_pages(http, week)
        assert ids == [f"{i:032x}" for i in (3, 77_777, 99_999)] and pages == 1  # all three, newest first
        two_days = (await http.get("/api/v1/executions", params={**week, "since": now - 2 * DAY})).json()
        assert [r["task_id"] for r in two_days["executions"]] == [f"{3:032x}"]
        failed = (await http.get("/api/v1/executions", params={"status": "failed"})).json()
        assert len(failed["executions"]) == 3 and failed["next_cursor"] is None
        row = failed["executions"][0]
        assert row["error_type"] == "ValueError" and row["worker"] == {"host": "worker-1", "pid": 4242}
        # Ten pages deep without a filter: 500 distinct executions, newest first, every page full.
        seen: list[tuple[float, str]] = []
        cursor = None
        for _ in range(10):
            body = (await http.get("/api/v1/executions", params={"cursor": cursor} if cursor else {})).json()
            assert len(body["executions"]) == 50
            seen += [(r["enqueued_at"], r["task_id"]) for r in body["executions"]]
            cursor = body["next_cursor"]
        newest = sorted(((round(e.enqueued_at or 0, 6), e.task_id) for e in events), reverse=True)[:500]
        assert [t for _, t in seen] == [t for _, t in newest]


async def test_every_filter_combination_pages_through_every_match_in_order(redis_srv: RedisServer) -> None:
    now = time.time()
    statuses = ["success", "failed", "retried"]
    # 40 executions share one millisecond: the cursor must order ties, not skip or repeat them.
    events = [finished(i, now - (i // 40), TYPES[i % 3], statuses[i % 4 % 3]) for i in range(600)]
    fill(redis_srv.url, events)

    def expected(names: set[str] | None, stats: set[str] | None) -> list[str]:
        rows = [e for e in events if (names is None or e.task_name in names) and (stats is None or e.status in stats)]
        return [e.task_id for e in sorted(rows, key=lambda e: (int((e.enqueued_at or 0) * 1000), e.task_id))][::-1]

    async with client(redis_srv.url) as http:
        for names in (None, {TYPES[0]}, {TYPES[0], TYPES[2]}):
            for stats in (None, {"failed"}, {"success", "retried"}):
                params: dict[str, Any] = {"limit": 50}
                if names:
                    params["task_name"] = ",".join(sorted(names))
                if stats:
                    params["status"] = sorted(stats)
                ids, _ = await all_pages(http, params)
                # Ties on the millisecond are ordered by the member bytes: compare as sets per millisecond, and
                # the whole as an exact, duplicate-free list of the right length and order of milliseconds.
                want = expected(names, stats)
                assert len(ids) == len(set(ids)) == len(want) and set(ids) == set(want)


async def test_cursor_stays_stable_while_executions_are_written(redis_srv: RedisServer) -> None:
    now = time.time()
    oldest = TaskEvent("running", f"{9000:032x}", "tasks:type_0", now - 1500, enqueued_at=now - 1500, started_at=now)
    fill(redis_srv.url, [oldest, *(finished(i, now - 1000 + i) for i in range(200))])
    async with client(redis_srv.url) as http:
        first = (await http.get("/api/v1/executions", params={"limit": 50})).json()
        # Meanwhile: 100 newer executions arrive, and the oldest one finishes (it moves to another index).
        fill(redis_srv.url, [finished(1000 + i, now - 10 + i / 100) for i in range(100)])
        fill(redis_srv.url, [finished(9000, now - 1500)])
        ids = [r["task_id"] for r in first["executions"]]
        cursor = first["next_cursor"]
        statuses = []
        while cursor:
            body = (await http.get("/api/v1/executions", params={"cursor": cursor, "limit": 50})).json()
            ids += [r["task_id"] for r in body["executions"]]
            statuses += [r["status"] for r in body["executions"]]
            cursor = body["next_cursor"]
    # The newer ones are not mixed in, none is repeated or skipped, and the one that changed status is where it was.
    assert ids == [f"{i:032x}" for i in reversed(range(200))] + [f"{9000:032x}"]
    assert statuses[-1] == "success"


async def test_retention_by_age_and_by_count_evicts_oldest_first_and_counts(redis_srv: RedisServer) -> None:
    now = time.time()
    old = [finished(i, now - 40 * DAY + i) for i in range(1500)]  # beyond 30 days: more than one bounded step
    recent = [finished(10_000 + i, now - 3600 + i) for i in range(300)]
    fill(redis_srv.url, old + recent)
    settings = Settings(redis_url=redis_srv.url, history_retention_days=30, history_max_executions=200)
    store = RedisStore(settings)
    try:
        steps = 0
        while True:
            _, _, more = await store.history_expire_step()
            steps += 1
            if not more:
                break
        assert steps >= 2  # bounded steps, not one sweep
        size, evicted = store.history_counts_sync()
        assert (size, evicted) == (200, {"age": 1500, "count": 100})
        page = await store.history.page(HistoryQuery(limit=50))
        assert page.executions[0].task_id == f"{10_299:032x}"
        metrics = {
            (s.name, tuple(s.labels.values())): s.value
            for family in HistoryCollector(store).collect()
            for s in family.samples
        }
        assert metrics[("taskiq_monitor_history_evicted_total", ("age",))] == 1500
        assert metrics[("taskiq_monitor_history_evicted_total", ("count",))] == 100
        assert metrics[("taskiq_monitor_history_executions", ())] == 200
        async with client(redis_srv.url) as http:
            ids, _ = await all_pages(http, {"limit": 50})
        assert ids == [f"{10_000 + i:032x}" for i in reversed(range(100, 300))]  # the 200 newest remain
    finally:
        await store.aclose()


async def test_all_attempts_of_a_retried_task_with_error_detail(redis_srv: RedisServer) -> None:
    now = time.time()
    first = finished(7, now - 5, status="retried", attempt=1)
    first.error_type, first.error_message, first.traceback = "TimeoutError", "slow", "Traceback...\nTimeoutError\n"
    second = finished(7, now - 2, status="success", attempt=2)
    late_pending = TaskEvent("pending", f"{7:032x}", "tasks:type_0", now - 6, attempt=1, enqueued_at=now - 5)
    fill(redis_srv.url, [first, second])
    fill(redis_srv.url, [late_pending])  # arrives after the attempt finished: must not overwrite it
    async with client(redis_srv.url) as http:
        body = (await http.get(f"/api/v1/executions/{7:032x}")).json()
        assert [(a["attempt"], a["status"]) for a in body["attempts"]] == [(1, "retried"), (2, "success")]
        assert body["attempts"][0]["traceback"].endswith("TimeoutError\n")
        assert body["attempts"][0]["kwargs"]["user_id"] == 7
        by_filter = (await http.get("/api/v1/executions", params={"task_id": f"{7:032x}", "status": "retried"})).json()
        assert [r["attempt"] for r in by_filter["executions"]] == [1]
        missing = await http.get(f"/api/v1/executions/{8:032x}")
        assert missing.status_code == 404 and missing.json()["detail"]["error"] == "unknown_task_id"


async def test_the_attempts_of_one_task_page_like_any_filter(redis_srv: RedisServer) -> None:
    # A task retried more often than a page holds: every attempt on some page, once, newest first.
    now = time.time()
    attempts = [finished(9, now - 60 + a, status="retried", attempt=a) for a in range(1, 6)]
    fill(redis_srv.url, [*attempts, finished(9, now - 50, status="success", attempt=6)])
    seen: list[int] = []
    cursor: str | None = None
    async with client(redis_srv.url) as http:
        for _ in range(10):
            params = {"task_id": f"{9:032x}", "limit": 2, **({"cursor": cursor} if cursor else {})}
            body = (await http.get("/api/v1/executions", params=params)).json()
            seen += [row["attempt"] for row in body["executions"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        retried = (await http.get("/api/v1/executions", params={"task_id": f"{9:032x}", "status": "retried"})).json()
    assert seen == [6, 5, 4, 3, 2, 1]
    assert [row["attempt"] for row in retried["executions"]] == [5, 4, 3, 2, 1] and retried["next_cursor"] is None


async def test_a_task_id_with_a_slash_is_reachable_by_its_detail_route(redis_srv: RedisServer) -> None:
    # Custom task ids may hold "/"; the server decodes %2F before routing, so the route takes the rest of the path.
    ev = finished(1, time.time())
    ev.task_id = "import/2026-12-01/batch 7"
    fill(redis_srv.url, [ev])
    async with client(redis_srv.url) as http:
        body = (await http.get("/api/v1/executions/" + urllib.parse.quote(ev.task_id, safe=""))).json()
    assert body["task_id"] == ev.task_id and [a["attempt"] for a in body["attempts"]] == [1]


@pytest.mark.parametrize("case", ["would-show-twice", "would-skip"])
async def test_an_execution_finishing_while_its_page_is_read_is_on_it_once(
    redis_srv: RedisServer, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    # The page merges the task x status indexes in rounds; the worker finishes X between two of them (a real write
    # to the real Redis, placed between the rounds so the interleaving is certain).
    base = time.time() - 3600
    settings = Settings(redis_url=redis_srv.url)
    if case == "would-show-twice":
        # X, pending, is older than the 20 newest successes: buffered from the pending index in the first round,
        # then read again from the success index in the next one.
        others = [finished(i, base + 100 + i, task="t") for i in range(1, 31)]
        x_at = base + 105
    else:
        # X, pending among 30 newer pending executions: the success index (all older) was read past X's time in
        # the first round, the pending index is read again after X left it.
        others = [finished(i, base + i, task="t") for i in range(1, 31)]
        others += [
            TaskEvent("pending", f"{1000 + j:032x}", "t", base + 140 + j, enqueued_at=base + 140 + j) for j in range(30)
        ]
        x_at = base + 135
    x = f"{999:032x}"
    write_events(settings, [*others, TaskEvent("pending", x, "t", x_at, enqueued_at=x_at)])
    rounds = 0
    read = history_redis.RedisHistory._read

    async def read_then_finish_x(self: history_redis.RedisHistory, *args: Any) -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 2:
            await asyncio.to_thread(write_events, settings, [finished(999, x_at, task="t")])
        await read(self, *args)

    monkeypatch.setattr(history_redis.RedisHistory, "_read", read_then_finish_x)
    store = RedisStore(settings)
    try:
        page = await store.history_page(HistoryQuery(limit=50))
    finally:
        await store.aclose()
    ids = [e.task_id for e in page.executions]
    assert rounds >= 2  # the write did land between two rounds
    assert ids.count(x) == 1 and len(ids) == len(set(ids)), ids
    assert next(e.status for e in page.executions if e.task_id == x) == "success"


async def test_a_long_custom_task_id_is_reachable_by_its_detail_route_and_filter(redis_srv: RedisServer) -> None:
    # An application's own ids (idempotency keys, URLs) may be long: recorded bounded, they are found by the id the
    # application knows; tail and the dashboard link every failed one to its detail.
    long_id = "report:" + "tenant-42/" * 200
    fill(redis_srv.url, [finished(1, time.time(), status="failed", task_id=long_id)])
    recorded = bounded_task_id(long_id)
    assert len(recorded) == MAX_RECORDED_TASK_ID_CHARS < len(long_id)
    async with client(redis_srv.url) as http:
        detail = await http.get("/api/v1/executions/" + urllib.parse.quote(long_id, safe=""))
        by_recorded = await http.get("/api/v1/executions/" + urllib.parse.quote(recorded, safe=""))
        by_filter = await http.get("/api/v1/executions", params={"task_id": long_id})
        too_long = await http.get("/api/v1/executions/" + "x" * (MAX_TASK_ID_CHARS + 1))
    assert detail.status_code == 200, detail.text[:300]
    assert detail.json()["task_id"] == detail.json()["attempts"][0]["task_id"] == recorded
    assert by_recorded.json() == detail.json()  # the dashboard's link: the id the history holds
    assert by_filter.status_code == 200, by_filter.text[:300]
    assert [row["task_id"] for row in by_filter.json()["executions"]] == [recorded]
    assert too_long.status_code == 422


async def test_bad_input_gets_a_readable_422(redis_srv: RedisServer) -> None:
    fill(redis_srv.url, [finished(1, time.time())])
    async with client(redis_srv.url) as http:
        for params, code in (
            ({"status": "done"}, "unknown_status"),
            ({"task_name": "nope"}, "unknown_task_name"),
            ({"cursor": "!!!"}, "malformed_cursor"),
            ({"since": "1960-01-01T00:00:00Z"}, "invalid_time"),
        ):
            reply = await http.get("/api/v1/executions", params=params)
            assert reply.status_code == 422 and reply.json()["detail"]["error"] == code, params
            assert reply.json()["detail"]["message"]
        # FastAPI's own checks answer in the same shape (never its list, never the value sent back).
        for path, params, words in (
            ("/api/v1/executions", {"limit": 51}, "limit: Input should be less than or equal to 50"),
            ("/api/v1/executions", {"limit": "abc", "since": "soon"}, "limit: Input should be a valid integer"),
            ("/api/v1/tasks/series", {"minutes": 1441}, "minutes: Input should be less than or equal to 1440"),
            ("/api/v1/executions/" + "q" * (MAX_TASK_ID_CHARS + 1), {}, "task_id: String should have at most"),
        ):
            reply = await http.get(path, params=params)
            assert reply.status_code == 422, (path, params)
            detail = reply.json()["detail"]
            assert detail["error"] == "invalid_parameter" and words in detail["message"], detail
            assert "qqqq" not in detail["message"]
        assert "since: " in (await http.get("/api/v1/executions", params={"since": "soon"})).json()["detail"]["message"]


async def test_an_unknown_task_name_names_the_closest_of_a_hundred_types_not_all(redis_srv: RedisServer) -> None:
    fill(redis_srv.url, [finished(i, time.time(), f"billing.tasks:send_invoice_{i}") for i in range(100)])
    async with client(redis_srv.url) as http:
        for path in ("/api/v1/executions", "/api/v1/events"):
            reply = await http.get(path, params={"task_name": "billing.tasks:send_invoice_7x"})
            assert reply.status_code == 422, reply.text[:300]
            detail = reply.json()["detail"]
            assert detail["error"] == "unknown_task_name"
            assert detail["message"].startswith(
                "unknown task_name 'billing.tasks:send_invoice_7x'; closest: 'billing.tasks:send_invoice_7'"
            ), detail
            assert "task names known; GET /api/v1/tasks lists them" in detail["message"]
            assert detail["message"].count("send_invoice_") <= 6 and len(detail["message"]) < 400, detail
        # A task id not held is named, not sent back in full.
        missing = await http.get("/api/v1/executions/" + "n" * 5000)
    assert missing.status_code == 404 and missing.json()["detail"]["error"] == "unknown_task_id"
    assert "(5,000 characters)" in missing.json()["detail"]["message"] and len(missing.text) < 300


async def test_series_counts_finished_executions_per_minute(redis_srv: RedisServer) -> None:
    now = time.time()
    fill(redis_srv.url, [finished(i, now - 1, status="failed" if i < 2 else "success") for i in range(5)])
    fill(redis_srv.url, [finished(100 + i, now - 120) for i in range(3)])  # two minutes earlier
    async with client(redis_srv.url) as http:
        body = (await http.get("/api/v1/tasks/series", params={"minutes": 10})).json()
    assert body["step_seconds"] == 60 and body["start"] == (int(now // 60) - 9) * 60
    series = body["series"]["tasks:type_0"]
    assert sum(series["success"]) == 6 and sum(series["failed"]) == 2 and len(series["success"]) == 10
    assert series["failed"][-1] == 2  # the current minute (finished events are counted at their timestamp)


async def test_tasks_report_24h_statistics_from_counters(redis_srv: RedisServer) -> None:
    now = time.time()
    early = [
        finished(i, now - 20 * 3600, status="failed", duration_seconds=9.0) if i < 2 else finished(i, now - 20 * 3600)
        for i in range(10)
    ]
    fill(redis_srv.url, [*early, finished(50, now - 30)])
    async with client(redis_srv.url) as http:
        task = (await http.get("/api/v1/tasks")).json()["tasks"][0]
    window = task["window"]
    assert window["seconds"] == 86400  # FR-014: 24 h by default
    assert (window["success"], window["failed"]) == (9, 2) and window["success_rate"] == pytest.approx(9 / 11)
    # FR-013: sum(duration) / count(success): the failed runs' 9 s do not count.
    assert window["avg_duration_seconds"] == pytest.approx(0.15)


def test_restarts_lose_nothing_that_reached_the_store(redis_srv: RedisServer) -> None:
    now = time.time()
    settings = Settings(redis_url=redis_srv.url)
    worker = StateSink(settings, registry=CollectorRegistry())
    running = TaskEvent("running", f"{1:032x}", "tasks:type_0", now, enqueued_at=now - 1, started_at=now, host="h")
    worker.emit(running)
    worker.emit(finished(2, now - 1))
    wait_for(lambda: worker.written == 2, 30, "two events written")
    worker.stop()  # the worker restarts: a new process finishes what the old one started
    restarted = StateSink(settings, registry=CollectorRegistry())
    restarted.emit(finished(1, now - 1))
    wait_for(lambda: restarted.written == 1, 30, "the finish written")
    restarted.stop()

    async def read() -> list[tuple[str, str]]:
        store = RedisStore(settings)  # a fresh exporter
        try:
            page = await store.history.page(HistoryQuery())
            return [(e.task_id, e.status) for e in page.executions]
        finally:
            await store.aclose()

    rows = asyncio.run(read())
    assert sorted(rows) == [(f"{1:032x}", "success"), (f"{2:032x}", "success")]


def test_outage_is_buffered_counted_and_resynchronised(redis_srv: RedisServer) -> None:
    """Redis goes away (saving its data) and comes back: every execution is either in the history or counted as
    dropped; none is lost silently, none is written twice."""
    now = time.time()
    registry = CollectorRegistry()
    settings = Settings(redis_url=redis_srv.url, state_buffer_events=6, heartbeat_seconds=0.2)
    sink = StateSink(settings, registry=registry)
    sink.emit(finished(0, now - 10))
    wait_for(lambda: sink.written == 1, 30, "first event written")
    with contextlib.suppress(Exception):
        redis_srv.client().shutdown(save=True)
    if redis_srv.proc is not None:
        redis_srv.proc.wait(10)
    sink.emit(finished(1, now - 9))
    # Its batch fails and is retried as it is: the flusher takes nothing more from the buffer until it is written (the
    # rest emitted at once could race the flusher's first take, which on a loaded machine took 3 of them).
    wait_for(lambda: sink.failures >= 1, 30, "the write to fail")
    for i in range(2, 11):
        sink.emit(finished(i, now - 10 + i))
    dropped = sink.dropped
    assert dropped == 3  # 6 buffered behind the batch in flight
    assert registry.get_sample_value("taskiq_monitor_state_events_total", {"result": "dropped"}) == dropped
    redis_srv.start()
    wait_for(lambda: sink.written == 11 - dropped, 60, f"buffer written after the outage ({sink.written})")
    sink.stop()

    async def held() -> list[str]:
        store = RedisStore(settings)
        try:
            page = await store.history.page(HistoryQuery())
            return [e.task_id for e in page.executions]
        finally:
            await store.aclose()

    ids = asyncio.run(held())
    assert len(ids) == 11 - dropped and ids[-1] == f"{0:032x}"  # the first one survived the restart
    assert ids[:-1] == [f"{i:032x}" for i in reversed(range(1, 11 - dropped))]  # the oldest buffered were kept


async def test_many_executions_in_one_millisecond_page_exactly_once(redis_srv: RedisServer) -> None:
    """More entries share the cursor's millisecond than one read of an index holds: none is skipped or repeated."""
    at = time.time() - 60
    fill(redis_srv.url, [finished(i, at, TYPES[i % 2]) for i in range(300)])
    async with client(redis_srv.url) as http:
        for params in ({"limit": 7}, {"limit": 50, "task_name": TYPES[0]}, {"limit": 1}):
            ids, _ = await all_pages(http, params)
            names = {TYPES[0]} if "task_name" in params else set(TYPES[:2])
            want = sorted(f"{i:032x}" for i in range(300) if TYPES[i % 2] in names)
            assert len(ids) == len(want) and sorted(ids) == want, params


def _open(i: int, status: str, at: float, pid: int) -> TaskEvent:
    """Attempt ``i`` as a worker records it while it waits (``pending``) or runs (``running``)."""
    return TaskEvent(
        status=status,
        task_id=f"{i:032x}",
        task_name="tasks:type_0",
        timestamp=at,
        enqueued_at=at,
        started_at=at if status == "running" else None,
        host="worker-1",
        pid=pid,
    )


def _write_as_worker(url: str, events: list[TaskEvent], pid: int, ttl: float) -> None:
    """What the state sink of worker ``worker-1:<pid>`` writes: its running set lives ``ttl`` s past the write."""
    conf = Settings(redis_url=url, heartbeat_seconds=ttl / 4, worker_ttl_seconds=ttl)
    writer = RedisWriter(conf)
    sink = StateSink(conf, writer=writer, registry=CollectorRegistry())
    try:
        ops = [sink._prepare(e) for e in events]
        assert writer.write(WriteBatch(now=time.time(), ops=ops, worker=f"worker-1:{pid}")) == 0
    finally:
        writer.close()


async def test_attempts_of_a_dead_worker_and_expired_messages_read_as_lost(redis_srv: RedisServer) -> None:
    now = time.time()
    # Worker 4242 stays alive (its running set outlives the test); worker 4343 dies: no heartbeat after this write,
    # so its running set expires with its TTL, as after a kill -9.
    _write_as_worker(redis_srv.url, [_open(1, "running", now, 4242), _open(3, "pending", now, 4242)], 4242, 600)
    done = finished(5, now)
    done.pid = 4343
    _write_as_worker(redis_srv.url, [_open(2, "running", now, 4343), done], 4343, 1.0)
    # A message queued long ago: the snapshot (any /api/v1/tasks) expires it from the pending set by the horizon.
    _write_as_worker(redis_srv.url, [_open(4, "pending", now - 7200, 4242)], 4242, 600)

    def lost(rows: list[dict[str, Any]]) -> dict[int, bool]:
        return {int(r["task_id"], 16): r["lost"] for r in rows}

    async with client(redis_srv.url, pending_horizon_seconds=3600) as http:
        rows = (await http.get("/api/v1/executions", params={"status": "running,pending"})).json()["executions"]
        assert lost(rows)[1] is False and lost(rows)[3] is False

        async def dead_worker_shows() -> dict[int, bool]:
            await http.get("/api/v1/tasks")  # the snapshot: applies the pending horizon
            page = (await http.get("/api/v1/executions", params={"status": "running,pending"})).json()
            found = lost(page["executions"])
            return found if found[2] and found[4] else {}

        deadline = time.monotonic() + 30
        found: dict[int, bool] = {}
        while not found and time.monotonic() < deadline:
            found = await dead_worker_shows()
            await asyncio.sleep(0.2)
        assert found == {1: False, 2: True, 3: False, 4: True}, found
        detail = (await http.get(f"/api/v1/executions/{2:032x}")).json()
        assert [a["lost"] for a in detail["attempts"]] == [True]
        # A finished attempt of the dead worker is just finished.
        assert [
            r["lost"]
            for r in (await http.get("/api/v1/executions", params={"task_id": f"{5:032x}"})).json()["executions"]
        ] == [False]
