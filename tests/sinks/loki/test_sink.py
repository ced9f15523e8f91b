"""The sink (sinks/loki/sink.py, hooks.py): batching, shutdown, thread restarts, exact drop counts, process hooks."""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from taskiq import InMemoryBroker, TaskiqMessage, TaskiqResult

from taskiq_monitor.events import TaskEvent
from taskiq_monitor.middleware import ENQUEUED_AT_LABEL, MonitoringMiddleware
from taskiq_monitor.settings import Settings
from taskiq_monitor.sinks import default_sinks
from taskiq_monitor.sinks.loki import LokiSink, Spool, hooks
from tests.loki_double import LokiPushDouble, validate_push
from tests.sinks.loki.helpers import FAST, counted, event, flush_within, wait


def replayed_by_a_new_sink(loki: LokiPushDouble, make_sink: Any, expected: int, **overrides: Any) -> None:
    """Loki back up: the next start of a sink ships the spool and one new record, each record once."""
    loki.set_mode("ok")
    second, registry = make_sink(**overrides)
    second.emit(event(999))
    loki.wait_for(lambda d: len(d.entries) == expected, 10)
    # The double has the entries before the sender has read the response and counted them.
    wait(lambda: counted(registry, "shipped") >= expected)
    assert loki.duplicates == 0 and counted(registry, "shipped") == expected


def test_batches_are_bounded_by_records_and_bytes(loki: LokiPushDouble, make_sink: Any) -> None:
    sink, _ = make_sink(loki_batch_max_records=100, loki_batch_max_bytes=20_000, loki_batch_wait_seconds=0.5)
    for i in range(1000):
        sink.emit(event(i, kwargs={"pad": "x" * 150}))
    loki.wait_for(lambda d: len(d.entries) == 1000, 10)
    sizes = [len(body) for body in loki.raw_bodies]
    counts = [sum(len(s["values"]) for s in json.loads(body)["streams"]) for body in loki.raw_bodies]
    assert max(counts) <= 100 and max(sizes) <= 20_000 + 2_000
    assert len(loki.raw_bodies) >= 10


def test_close_flushes_queued_records_without_waiting_for_the_batch_timer(loki: LokiPushDouble, make_sink: Any) -> None:
    # The batch timer outlasts the flush budget: had close() waited for it, the budget would run out and the
    # records would be spooled, not shipped.
    sink, registry = make_sink(loki_batch_wait_seconds=3600, loki_flush_timeout_seconds=30)
    for i in range(10):
        sink.emit(event(i))
    sink.flush_sync()
    assert len(loki.entries) == 10 and counted(registry, "shipped") == 10 and counted(registry, "spooled") == 0


def test_queued_events_are_encoded_promptly_and_still_shipped_as_one_batch_when_due(
    loki: LokiPushDouble, make_sink: Any
) -> None:
    # A queued event holds objects the cyclic GC tracks; the collector encodes them into entries (strings) as soon
    # as PROMPT_RECORDS are queued, while the batch keeps waiting for its timer (or for max records).
    sink, registry = make_sink(loki_batch_wait_seconds=1.5, loki_batch_max_records=1000)
    n = LokiSink.PROMPT_RECORDS + 10
    for i in range(n):
        sink.emit(event(i))
    wait(lambda: len(sink._queue) < n - LokiSink.PROMPT_RECORDS + 1 and len(sink._building) >= LokiSink.PROMPT_RECORDS)
    assert sink.pending() == n  # encoded, not yet handed over: still counted as pending
    loki.wait_for(lambda d: len(d.entries) == n, 20)
    assert len(loki.raw_bodies) == 1 and sorted(r["task_id"] for r in loki.records()) == sorted(
        f"task-{i}" for i in range(n)
    )
    wait(lambda: counted(registry, "shipped") == n)
    assert sink.pending() == 0


def test_close_during_outage_spools_within_the_timeout_and_next_start_replays(
    loki: LokiPushDouble, make_sink: Any
) -> None:
    loki.set_mode("hang")
    # The push would hang for an hour: close() must give up on it after its own budget, not the push's timeout.
    first, registry = make_sink(loki_batch_wait_seconds=60, loki_flush_timeout_seconds=1.0, loki_timeout_seconds=3600)
    for i in range(200):
        first.emit(event(i))
    flush_within(first, 30)  # 10x the budget (1 s) plus the abort grace; the timing target is in bench_loki.py
    assert counted(registry, "spooled") == 200 and len(loki.entries) == 0
    replayed_by_a_new_sink(loki, make_sink, 201)


def test_default_sinks_register_loki_only_when_configured(tmp_path: Path) -> None:
    assert not [s for s in default_sinks(Settings()) if isinstance(s, LokiSink)]
    sinks = default_sinks(Settings(loki_url="http://127.0.0.1:9", loki_spool_dir=tmp_path))
    assert [type(s) for s in sinks if isinstance(s, LokiSink)] == [LokiSink]


def test_settings_reject_non_http_loki_url() -> None:
    with pytest.raises(ValueError):
        Settings(loki_url="loki:3100")


@pytest.mark.parametrize("coalesce", [False, True])
async def test_secrets_in_task_parameters_never_reach_loki(
    loki: LokiPushDouble, tmp_path: Path, coalesce: bool
) -> None:
    # Both ways: the failed record's parameters redacted by the running event's build, or by its own (coalesced).
    settings = Settings(
        loki_url=loki.url,
        loki_spool_dir=tmp_path,
        events_coalesce=coalesce,
        **FAST,  # type: ignore[arg-type]
    )
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
    if coalesce:  # running only when the collector took the attempt's handle while the task ran
        assert statuses - {"running"} == {"pending", "failed"}
    else:
        assert statuses == {"pending", "running", "failed"}
    payloads = b"".join(loki.raw_bodies).decode()
    assert "SECRET" not in payloads and "hunter3" not in payloads
    failed = next(r for r in loki.records() if r["status"] == "failed")
    assert "https://bot:***@hooks.example.invalid" in failed["error_message"]
    assert failed["args"][1] == "[REDACTED]" and failed["error_type"] == "ConnectionError"
    for body in loki.raw_bodies:
        validate_push(json.loads(body), loki.allowed_labels, time.time_ns())


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_emit_restarts_a_shipper_thread_that_died(loki: LokiPushDouble, make_sink: Any) -> None:
    sink, registry = make_sink()
    sink.emit(event(0))
    loki.wait_for(lambda d: len(d.entries) == 1, 10)
    real = sink._hand_over

    def die_once(batch: Any, *args: Any) -> None:
        sink._hand_over = real  # type: ignore[method-assign]
        raise SystemExit  # not an Exception: the loop cannot catch it, the thread ends

    sink._hand_over = die_once  # type: ignore[method-assign]
    sink.emit(event(1))
    wait(lambda: not all(t.is_alive() for t in sink._live_threads()))
    for i in range(2, 12):
        sink.emit(event(i))
    loki.wait_for(lambda d: len(d.entries) == 11, 10)
    assert all(t.is_alive() for t in sink._live_threads())
    assert counted(registry, "dropped") == 1  # record 1 was in the dying thread's hands: counted, not vanished


def test_close_while_a_push_hangs_spools_everything_within_taskiqs_shutdown_timeout(
    loki: LokiPushDouble, make_sink: Any
) -> None:
    loki.set_mode("hang")
    # By default an in-flight push may wait 10 s, the flush budget is 3 s and taskiq allows 5 s; here the push would
    # wait an hour, so a close() that waited for it could not return within the test's deadline.
    first, registry = make_sink(
        loki_timeout_seconds=3600, loki_connect_timeout_seconds=3.0, loki_flush_timeout_seconds=1.0, loki_retries=3
    )
    for i in range(100):
        first.emit(event(i))
    wait(lambda: loki.stats.by_status.get(0, 0) >= 1)  # the sender is inside a hanging POST
    for i in range(100, 200):
        first.emit(event(i))
    wait(lambda: not first._queue)  # the second hundred is batched, waiting behind the hanging push
    # close() aborts the in-flight push after its 1 s budget. How long that takes on a quiet machine is measured by
    # bench_loki.py; here, that it happened while the push still hung.
    flush_within(first, 30)
    assert loki.stats.by_status == {0: 1}  # one push, never answered: it was aborted, not timed out and retried
    assert counted(registry, "spooled") == 200 and counted(registry, "dropped") == 0
    assert first.pending() == 0
    replayed_by_a_new_sink(loki, make_sink, 201)


class _SlowCounterSink(LokiSink):
    """Makes a read-modify-write of ``_overflow`` yield between the read and the write, as free threading may."""

    @property  # type: ignore[override]
    def _overflow(self) -> int:
        value = self.__dict__.get("_overflow_value", 0)
        time.sleep(0)
        return int(value)

    @_overflow.setter
    def _overflow(self, value: int) -> None:
        self.__dict__["_overflow_value"] = value


def test_queue_full_drops_are_counted_exactly_from_many_threads(loki: LokiPushDouble, tmp_path: Path) -> None:
    registry = CollectorRegistry()
    settings = Settings(
        loki_url=loki.url,
        loki_spool_dir=tmp_path,
        loki_queue_max_records=100,
        **FAST,  # type: ignore[arg-type]
    )
    sink = _SlowCounterSink(settings, registry=registry)
    gate, stalled_now = threading.Event(), threading.Event()
    real_entry = sink._entry

    def stalled(event: TaskEvent) -> Any:
        stalled_now.set()
        gate.wait(30)  # the collector is stalled: the queue stays full
        return real_entry(event)

    sink._entry = stalled  # type: ignore[method-assign]
    try:
        sink.emit(event(0))
        assert stalled_now.wait(10)  # the collector holds record 0
        for i in range(1, 101):
            sink.emit(event(i))  # the queue is full
        switch = sys.getswitchinterval()
        sys.setswitchinterval(1e-5)
        try:
            threads = [threading.Thread(target=lambda: [sink.emit(event(-1)) for _ in range(300)]) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            sys.setswitchinterval(switch)
        gate.set()
        wait(lambda: counted(registry, "shipped") == 101)
        wait(lambda: counted(registry, "dropped") >= 1200, 30)
        time.sleep(0.2)
        assert counted(registry, "dropped") == 1200
    finally:
        gate.set()
        sink.flush_sync(timeout=0.5)


def test_first_emit_does_no_start_up_io_on_the_callers_thread(
    loki: LokiPushDouble, make_sink: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    callers: list[str] = []
    real_open, real_client_init = Spool.open, httpx.Client.__init__

    def spy_open(self: Spool, *args: Any, **kwargs: Any) -> None:
        callers.append(threading.current_thread().name)
        real_open(self, *args, **kwargs)

    def spy_client(self: httpx.Client, *args: Any, **kwargs: Any) -> None:
        callers.append(threading.current_thread().name)
        real_client_init(self, *args, **kwargs)

    monkeypatch.setattr(Spool, "open", spy_open)
    monkeypatch.setattr(httpx.Client, "__init__", spy_client)
    sink, _ = make_sink()
    sink.emit(event(1))
    loki.wait_for(lambda d: len(d.entries) == 1, 10)
    assert len(callers) == 2 and threading.current_thread().name not in callers, callers


def test_fork_and_exit_hooks_are_registered_once_per_process(
    loki: LokiPushDouble, make_sink: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered: list[Any] = []
    monkeypatch.setattr(atexit, "register", lambda *a, **k: registered.append(a))
    monkeypatch.setattr(os, "register_at_fork", lambda **k: registered.append(k))
    for _ in range(20):
        make_sink()
    assert len(registered) <= 2, f"{len(registered)} hooks for 20 sinks"


def test_exit_hook_flushes_every_live_sink(loki: LokiPushDouble, make_sink: Any) -> None:
    sinks = [make_sink(loki_batch_wait_seconds=60)[0] for _ in range(3)]
    for index, sink in enumerate(sinks):
        sink.emit(event(index))
    hooks.flush_all_sinks()
    assert len(loki.entries) == 3


def test_pushes_are_gzip_by_default_and_plain_json_when_compression_is_off(
    loki: LokiPushDouble, make_sink: Any
) -> None:
    gzip_sink, _ = make_sink()
    for i in range(5):
        gzip_sink.emit(event(i))
    gzip_sink.flush_sync()
    assert len(loki.entries) == 5 and set(loki.encodings) == {"gzip"}
    plain_sink, registry = make_sink(loki_compression="none")
    for i in range(5, 10):
        plain_sink.emit(event(i))
    plain_sink.flush_sync()
    assert len(loki.entries) == 10 and loki.encodings[-1] == "" and counted(registry, "shipped") == 5
    assert sorted(r["task_id"] for r in loki.records()) == sorted(f"task-{i}" for i in range(10))


def test_an_outage_without_a_usable_spool_is_logged_as_dropping_not_as_spooling(
    loki: LokiPushDouble, make_sink: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("")
    sink, registry = make_sink(loki_spool_dir=tmp_path / "a-file" / "spool")  # cannot be created, even by root
    loki.set_mode("503")
    for i in range(5):
        sink.emit(event(i))
    wait(lambda: counted(registry, "dropped") == 5)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    # Before: "Loki at … unavailable; spooling records to -", while every record was dropped.
    assert not [w for w in warnings if "spooling" in w], warnings
    assert [w for w in warnings if w.endswith("unavailable; no usable spool: dropping records until it is back")]
    assert counted(registry, "spooled") == 0 and loki.entries == []


def test_batches_spooled_without_compression_are_gzip_on_disk_and_replayed(
    loki: LokiPushDouble, make_sink: Any, tmp_path: Path
) -> None:
    loki.set_mode("hang")
    first, registry = make_sink(
        loki_compression="none", loki_batch_wait_seconds=60, loki_flush_timeout_seconds=1.0, loki_timeout_seconds=3600
    )
    for i in range(50):
        first.emit(event(i))
    flush_within(first, 30)
    assert counted(registry, "spooled") == 50
    files = list((tmp_path / "spool").glob("*.gz"))
    assert files and all(f.read_bytes()[:2] == b"\x1f\x8b" for f in files)  # the spool's cap counts gzip bytes
    replayed_by_a_new_sink(loki, make_sink, 51, loki_compression="none")
    assert "gzip" in loki.encodings and "" in loki.encodings


def test_an_attempt_finished_before_the_collector_took_it_is_shipped_as_its_final_record_only(
    loki: LokiPushDouble, make_sink: Any
) -> None:
    sink, _ = make_sink(loki_batch_wait_seconds=30)  # the collector takes nothing before 128 events or the flush
    middleware = MonitoringMiddleware(sink.settings, registry=CollectorRegistry(), sinks=[sink])
    enqueued = time.time() - 0.5
    for task_id in ("short", "long"):
        message = TaskiqMessage(
            task_id=task_id,
            task_name="score_message_task",
            labels={ENQUEUED_AT_LABEL: enqueued},
            args=[1],
            kwargs={"api_key": "k-SECRET"},
        )
        middleware.pre_execute(message)
        if task_id == "short":
            middleware.post_execute(message, TaskiqResult(is_err=False, return_value=None, execution_time=0.1))
    sink.flush_sync()
    records = {(r["task_id"], r["status"]): r for r in loki.records()}
    assert sorted(records) == [("long", "running"), ("short", "success")]
    short = records[("short", "success")]
    assert short["started_at"] is not None and short["queue_wait_seconds"] == pytest.approx(0.5, abs=0.4)
    assert short["args"] == [1] and short["kwargs"] == {"api_key": "[REDACTED]"}
    assert b"SECRET" not in b"".join(loki.raw_bodies)


def _attempts(middleware: MonitoringMiddleware, outcomes: dict[str, bool | None]) -> None:
    """Run an attempt per task id: True succeeds, False fails, None is still running."""
    for task_id, ok in outcomes.items():
        message = TaskiqMessage(task_id=task_id, task_name="score_message_task", labels={}, args=[1], kwargs={})
        middleware.pre_execute(message)
        if ok is not None:
            error = None if ok else ValueError("boom")
            result: TaskiqResult[Any] = TaskiqResult(is_err=not ok, return_value=None, execution_time=0.1, error=error)
            if error is not None:
                middleware.on_error(message, result, error)
            middleware.post_execute(message, result)


def test_statuses_left_out_are_not_shipped_while_the_state_store_gets_every_event(
    loki: LokiPushDouble, make_sink: Any
) -> None:
    from taskiq_monitor.sinks.state import StateSink
    from taskiq_monitor.store import MemoryStore

    sink, registry = make_sink(loki_batch_wait_seconds=30, loki_statuses="failed,retried")
    store = MemoryStore(sink.settings)
    state = StateSink(sink.settings, store, registry=CollectorRegistry())
    middleware = MonitoringMiddleware(sink.settings, registry=CollectorRegistry(), sinks=[sink, state])
    _attempts(middleware, {"ok": True, "bad": False, "long": None})
    sink.flush_sync()
    state.stop()
    records = loki.records()
    assert [(r["task_id"], r["status"]) for r in records] == [("bad", "failed")]
    assert "ValueError: boom" in records[0]["traceback"] and records[0]["args"] == [1]
    assert counted(registry, "shipped") == 1 and counted(registry, "dropped") == 0
    entries = asyncio.run(store.read_after("0-0", 100, 0))
    in_store = {(json.loads(e.payload)["task_id"], e.status) for e in entries}
    # A running event of a short attempt may be recorded too: the flusher may take it before the attempt ends.
    assert {("ok", "success"), ("bad", "failed"), ("long", "running")} <= in_store


def test_a_running_record_is_kept_when_its_final_status_is_not_shipped(loki: LokiPushDouble, make_sink: Any) -> None:
    sink, _ = make_sink(loki_batch_wait_seconds=30, loki_statuses="running,failed")
    middleware = MonitoringMiddleware(sink.settings, registry=CollectorRegistry(), sinks=[sink])
    _attempts(middleware, {"ok": True, "bad": False})  # both finished before the collector took anything
    sink.flush_sync()
    assert sorted((r["task_id"], r["status"]) for r in loki.records()) == [("bad", "failed"), ("ok", "running")]
