from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from taskiq import InMemoryBroker

from taskiq_monitor.events import TaskEvent
from taskiq_monitor.middleware import MonitoringMiddleware
from taskiq_monitor.settings import Settings
from taskiq_monitor.sinks import default_sinks
from taskiq_monitor.sinks.loki import LokiSink, Spool, retry_after_seconds
from tests.loki_double import LokiPushDouble, validate_push

FAST = {
    "loki_batch_wait_seconds": 0.05,
    "loki_backoff_initial_seconds": 0.05,
    "loki_backoff_max_seconds": 0.2,
    "loki_retries": 1,
    "loki_connect_timeout_seconds": 0.5,
    "loki_timeout_seconds": 0.5,
    "loki_flush_timeout_seconds": 2.0,
}


@pytest.fixture
def loki() -> Iterator[LokiPushDouble]:
    double = LokiPushDouble()
    yield double
    double.close()


@pytest.fixture
def make_sink(loki: LokiPushDouble, tmp_path: Path) -> Iterator[Callable[..., tuple[LokiSink, CollectorRegistry]]]:
    sinks: list[LokiSink] = []

    def make(**overrides: Any) -> tuple[LokiSink, CollectorRegistry]:
        registry = CollectorRegistry()
        values = {"loki_url": loki.url, "loki_spool_dir": tmp_path / "spool", **FAST, **overrides}
        sink = LokiSink(Settings(**values), registry=registry)
        sinks.append(sink)
        return sink, registry

    yield make
    for sink in sinks:
        sink.flush_sync(timeout=0.5)


def event(i: int, status: str = "success", task: str = "score_message_task", **kw: Any) -> TaskEvent:
    return TaskEvent(status=status, task_id=f"task-{i}", task_name=task, timestamp=time.time(), **kw)


def counted(registry: CollectorRegistry, result: str) -> float:
    return registry.get_sample_value("taskiq_monitor_log_records_total", {"result": result}) or 0.0


def wait(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met")


def test_records_arrive_with_bounded_labels_and_structured_metadata(loki: LokiPushDouble, make_sink: Any) -> None:
    sink, registry = make_sink(env="prod")
    for i in range(50):
        sink.emit(event(i, status="failed" if i % 10 == 0 else "success", trace_id="ab" * 16 if i == 1 else None))
    loki.wait_for(lambda d: len(d.entries) == 50, 10)
    assert not loki.stats.schema_errors
    labels = {e.labels for e in loki.entries}
    assert labels == {
        (("env", "prod"), ("service_name", "taskiq"), ("status", s), ("task_name", "score_message_task"))
        for s in ("failed", "success")
    }
    by_id = {dict(e.metadata)["task_id"]: e for e in loki.entries}
    assert dict(by_id["task-1"].metadata) == {"task_id": "task-1", "trace_id": "ab" * 16}
    record = by_id["task-0"].record
    assert record["schema_version"] == 1 and record["status"] == "failed" and record["timestamp"].endswith("Z")
    assert counted(registry, "shipped") == 50 and counted(registry, "dropped") == 0


def test_batches_are_bounded_by_records_and_bytes(loki: LokiPushDouble, make_sink: Any) -> None:
    sink, _ = make_sink(loki_batch_max_records=100, loki_batch_max_bytes=20_000, loki_batch_wait_seconds=0.5)
    for i in range(1000):
        sink.emit(event(i, kwargs={"pad": "x" * 150}))
    loki.wait_for(lambda d: len(d.entries) == 1000, 10)
    sizes = [len(body) for body in loki.raw_bodies]
    counts = [sum(len(s["values"]) for s in json.loads(body)["streams"]) for body in loki.raw_bodies]
    assert max(counts) <= 100 and max(sizes) <= 20_000 + 2_000
    assert len(loki.raw_bodies) >= 10


def test_503_outage_spools_then_replays_everything_exactly_once(loki: LokiPushDouble, make_sink: Any) -> None:
    sink, registry = make_sink()
    loki.set_mode("503")
    for i in range(300):
        sink.emit(event(i))
    wait(lambda: counted(registry, "spooled") == 300)
    assert registry.get_sample_value("taskiq_monitor_log_spool_bytes") > 0
    assert list(sink.spooled_files())
    loki.set_mode("ok")
    loki.wait_for(lambda d: len(d.entries) == 300, 10)
    assert sorted(k[0] for k in loki.record_keys()) == sorted(f"task-{i}" for i in range(300))
    assert loki.duplicates == 0
    wait(lambda: registry.get_sample_value("taskiq_monitor_log_spool_bytes") == 0)
    assert counted(registry, "shipped") == 300 and counted(registry, "dropped") == 0
    assert not list(sink.spooled_files())


@pytest.mark.parametrize("mode", ["down", "hang"])
def test_refused_or_hanging_loki_never_blocks_emit_and_loses_nothing(
    loki: LokiPushDouble, make_sink: Any, mode: str
) -> None:
    sink, registry = make_sink(loki_queue_max_records=1000)
    loki.set_mode(mode)
    slowest = 0.0
    for i in range(3000):  # 3x the queue bound: the collector spools while the sender waits on Loki
        started = time.perf_counter()
        sink.emit(event(i))
        slowest = max(slowest, time.perf_counter() - started)
        if i % 500 == 0:
            time.sleep(0.05)
    assert slowest < 0.05  # emit only appends
    wait(lambda: counted(registry, "spooled") + counted(registry, "shipped") >= 3000, 15)
    assert sink.pending() <= 1000 + LokiSink.OUTBOX_MAX * 1000
    loki.set_mode("ok")
    loki.wait_for(lambda d: len(d.entries) == 3000, 15)
    assert loki.duplicates == 0 and counted(registry, "dropped") == 0


def test_429_honours_retry_after(loki: LokiPushDouble, make_sink: Any) -> None:
    loki.retry_after = "0.6"
    loki.set_mode("429")
    sink, _ = make_sink(loki_backoff_initial_seconds=0.01, loki_backoff_max_seconds=5, loki_retries=5)
    sink.emit(event(1))
    wait(lambda: loki.stats.by_status.get(429, 0) >= 2, 5)
    times = [t for t, status in loki.stats.request_times if status == 429]
    assert times[1] - times[0] >= 0.55
    loki.set_mode("ok")
    loki.wait_for(lambda d: len(d.entries) == 1, 5)


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert 0 <= (retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") or 0) <= 0.0 + 1e-9


def test_400_isolates_and_drops_only_the_poisoned_record(loki: LokiPushDouble, make_sink: Any) -> None:
    loki.set_mode("poison")
    sink, registry = make_sink(loki_batch_wait_seconds=0.3)
    for i in range(64):
        sink.emit(event(i, kwargs={"text": loki.poison_marker if i == 37 else "fine"}))
    loki.wait_for(lambda d: len(d.entries) == 63, 10)
    assert "task-37" not in {k[0] for k in loki.record_keys()}
    wait(lambda: counted(registry, "dropped") == 1)
    assert counted(registry, "shipped") == 63 and loki.duplicates == 0


def test_spool_cap_drops_and_counts(loki: LokiPushDouble, make_sink: Any) -> None:
    loki.set_mode("503")
    sink, registry = make_sink(loki_spool_max_bytes=2000, loki_batch_max_records=50)
    for i in range(500):
        sink.emit(event(i, kwargs={"pad": f"{i}-" * 40}))
    wait(lambda: counted(registry, "spooled") + counted(registry, "dropped") == 500)
    assert counted(registry, "dropped") > 0
    assert sum(p.stat().st_size for p in sink.spooled_files()) <= 2000


def test_close_flushes_queued_records_without_waiting_for_the_batch_timer(loki: LokiPushDouble, make_sink: Any) -> None:
    sink, registry = make_sink(loki_batch_wait_seconds=60)
    for i in range(10):
        sink.emit(event(i))
    started = time.monotonic()
    sink.flush_sync()
    assert time.monotonic() - started < 2
    assert len(loki.entries) == 10 and counted(registry, "shipped") == 10


def test_close_during_outage_spools_within_the_timeout_and_next_start_replays(
    loki: LokiPushDouble, make_sink: Any
) -> None:
    loki.set_mode("hang")
    first, registry = make_sink(loki_batch_wait_seconds=60, loki_flush_timeout_seconds=1.0, loki_timeout_seconds=30)
    for i in range(200):
        first.emit(event(i))
    started = time.monotonic()
    first.flush_sync()
    assert time.monotonic() - started < 1.0 + 2.5
    assert counted(registry, "spooled") == 200 and len(loki.entries) == 0
    loki.set_mode("ok")
    second, registry2 = make_sink()
    second.emit(event(999))
    loki.wait_for(lambda d: len(d.entries) == 201, 10)
    assert loki.duplicates == 0 and counted(registry2, "shipped") == 201


def test_orphaned_spool_is_adopted_by_exactly_one_live_process(tmp_path: Path) -> None:
    from taskiq_monitor.sinks.loki import Batch

    dead = Spool(tmp_path, 10**9)
    dead.open()
    for i in range(20):
        dead.write(Batch((time.time_ns(), i), 1, gzip.compress(b"{}")))
    dead.forget_after_fork()  # the lock is released as when the process dies; its files and lock file remain
    alive = Spool(tmp_path, 10**9)
    alive.open(adopt=False)
    alive.write(Batch((time.time_ns(), 0), 1, gzip.compress(b"{}")))
    b, c = Spool(tmp_path, 10**9), Spool(tmp_path, 10**9)
    b.open(adopt=False)
    c.open(adopt=False)
    taken_b, taken_c = b.adopt_orphans(), c.adopt_orphans()
    assert len(taken_b) + len(taken_c) == 20 and not (set(taken_b) & set(taken_c))
    assert len(alive.files) == 1 and all(p.exists() for _, p, _, _ in alive.files)  # a live owner keeps its files
    assert not (tmp_path / f"{dead.owner}.lock").exists()
    keys = [k for k, *_ in (b.files or c.files)]
    assert keys == sorted(keys)


def test_default_sinks_register_loki_only_when_configured(tmp_path: Path) -> None:
    assert default_sinks(Settings()) == []
    sinks = default_sinks(Settings(loki_url="http://127.0.0.1:9", loki_spool_dir=tmp_path))
    assert [type(s) for s in sinks] == [LokiSink]


def test_settings_reject_non_http_loki_url() -> None:
    with pytest.raises(ValueError):
        Settings(loki_url="loki:3100")


async def test_secrets_in_task_parameters_never_reach_loki(loki: LokiPushDouble, tmp_path: Path) -> None:
    settings = Settings(loki_url=loki.url, loki_spool_dir=tmp_path, **FAST)  # type: ignore[arg-type]
    broker = InMemoryBroker(await_inplace=True)
    middleware = MonitoringMiddleware(settings, registry=CollectorRegistry())
    broker.add_middlewares(middleware)

    @broker.task(task_name="save_telegram_message")
    async def save_telegram_message(update: dict[str, Any], bot_token: str = "", webhook_url: str = "") -> int:
        raise ConnectionError(f"cannot post to {webhook_url} with password=hunter3")

    await broker.startup()
    await save_telegram_message.kiq(
        {"update_id": 1, "message": {"from": {"session_cookie": "sess-SECRET-1"}, "api": {"apiKey": "key-SECRET-2"}}},
        "123456:AAE-SECRET-TOKEN-3",  # positional: redacted by its parameter name
        webhook_url="https://bot:SECRET-PASS-4@hooks.example.invalid/telegram",
    )
    await broker.shutdown()
    assert loki.entries, "nothing shipped"
    statuses = {r["status"] for r in loki.records()}
    assert statuses == {"pending", "running", "failed"}
    payloads = b"".join(loki.raw_bodies).decode()
    assert "SECRET" not in payloads and "hunter3" not in payloads
    failed = next(r for r in loki.records() if r["status"] == "failed")
    assert "https://bot:***@hooks.example.invalid" in failed["error_message"]
    assert failed["args"][1] == "[REDACTED]" and failed["error_type"] == "ConnectionError"
    for body in loki.raw_bodies:
        validate_push(json.loads(body), loki.allowed_labels, time.time_ns())
