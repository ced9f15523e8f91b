"""What a Redis outage leaves in the log: a real password-protected redis-server stopped and restarted under the
exporter (a real uvicorn, with the Loki relay) and under a worker's state sink.

QA found ~120 lines in 8 s against an unreachable Redis, four chained tracebacks at WARNING among them, and headlines
("live feed: state store unavailable") without the cause or the address. Now each component logs one warning when
the outage begins (the cause, ``host:port/db``, never the password) and one info line when it ends; tracebacks are
debug records.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry

from taskiq_monitor.service import history as history_module
from taskiq_monitor.settings import Settings
from taskiq_monitor.sinks.state import StateSink
from tests.integration.redis_events import finished
from tests.integration.servers import RedisServer, wait_for
from tests.integration.test_service_server import serve
from tests.loki_double import LokiPushDouble

PASSWORD = "s3cret-pw-4711"
EXPORTER_COMPONENTS = (
    "taskiq-monitor live feed",
    "taskiq-monitor history retention",
    "taskiq-monitor API",
    "taskiq-monitor metrics",
    "taskiq-monitor Loki relay",
)


@pytest.fixture
def redis_pw() -> Iterator[RedisServer]:
    server = RedisServer(password=PASSWORD)
    try:
        yield server
    finally:
        server.cleanup()


def _ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("taskiq_monitor")]


def _of(records: list[logging.LogRecord], component: str, level: int) -> list[logging.LogRecord]:
    # "taskiq-monitor API" is not a prefix of another component's lines: each is followed by ": ".
    return [r for r in records if r.levelno == level and r.getMessage().startswith(component + ": ")]


def _failures(records: list[logging.LogRecord], component: str) -> int:
    return sum(1 for r in _of(records, component, logging.DEBUG) if re.search(r": attempt \d+ failed$", r.getMessage()))


def _assert_outage_logged(
    records: list[logging.LogRecord], components: tuple[str, ...], port: int, min_failures: int
) -> None:
    address = f"127.0.0.1:{port}/0"
    for component in components:
        warnings = _of(records, component, logging.WARNING)
        first = warnings[0].getMessage() if warnings else None
        assert first is not None and f"Redis at {address} is unavailable (ConnectionError: " in first, first
        # Met again and again (each failure a debug record), warned once (a reminder would come after a minute).
        assert _failures(records, component) >= min_failures, component
        assert len(warnings) <= 2, (component, [r.getMessage() for r in warnings])
        recovered = _of(records, component, logging.INFO)
        assert len(recovered) == 1, (component, [r.getMessage() for r in recovered])
        assert re.fullmatch(
            rf"{component}: Redis at {re.escape(address)} reachable again after [0-9.]+ s \(\d+ failed attempts\)",
            recovered[0].getMessage(),
        ), recovered[0].getMessage()
    loud = [r for r in records if r.levelno >= logging.WARNING]
    assert not [r.getMessage() for r in loud if r.exc_info or r.exc_text or "Traceback" in r.getMessage()]


async def test_a_redis_outage_is_one_warning_and_one_recovery_line_per_exporter_component(
    redis_pw: RedisServer, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(history_module, "_EXPIRE_INTERVAL", 0.2)  # retention meets the outage many times, not once
    loki = LokiPushDouble()
    settings = Settings(redis_url=redis_pw.url, loki_url=loki.url, loki_shipper="exporter", loki_batch_wait_seconds=0.1)
    # DEBUG: the tracebacks are there, at debug level, and must not carry the password either.
    caplog.set_level(logging.DEBUG, logger="taskiq_monitor")
    try:
        async with (
            serve(settings) as (_server, port, app),
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
        ):
            await asyncio.wait_for(app.state.live.ensure_broadcaster().ready.wait(), 30)

            async def poll(done: Callable[[], bool], what: str) -> None:
                deadline = time.monotonic() + 60
                while not done():
                    assert time.monotonic() < deadline, f"timed out waiting for {what}"
                    # What Prometheus and the dashboard do meanwhile: scrape, and read the API.
                    for path in ("/metrics", "/api/v1/tasks", "/api/v1/executions"):
                        await client.get(path)
                    await asyncio.sleep(0.1)

            redis_pw.stop()
            await poll(
                lambda: all(_failures(_ours(caplog), c) >= 3 for c in EXPORTER_COMPONENTS),
                "every component to fail three times",
            )
            redis_pw.start()
            await poll(
                lambda: all(_of(_ours(caplog), c, logging.INFO) for c in EXPORTER_COMPONENTS),
                "every component's recovery line",
            )
            assert (await client.get("/api/v1/tasks")).status_code == 200
    finally:
        loki.close()
    records = _ours(caplog)
    _assert_outage_logged(records, EXPORTER_COMPONENTS, redis_pw.port, min_failures=3)
    # Nothing else warned meanwhile (the scrape's skipped reads, the feed's connections…).
    assert len([r for r in records if r.levelno >= logging.WARNING]) <= 2 * len(EXPORTER_COMPONENTS)
    assert PASSWORD not in caplog.text


def test_the_state_sink_logs_one_warning_with_the_cause_and_one_recovery_line(
    redis_pw: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="taskiq_monitor")
    settings = Settings(redis_url=redis_pw.url)
    sink = StateSink(settings, registry=CollectorRegistry())
    try:
        sink.emit(finished(1, time.time()))
        wait_for(lambda: sink.written >= 1, 10, "the first event written")
        redis_pw.stop()
        for i in range(2, 12):
            sink.emit(finished(i, time.time()))  # buffered while Redis is away
        wait_for(lambda: sink.failures >= 4, 30, "the flusher to fail a few times")  # backoff 0.1, 0.2, 0.4…
        redis_pw.start()
        wait_for(lambda: sink.written >= 11, 30, f"the buffered events written (written={sink.written})")
    finally:
        sink.stop(timeout=5)
    _assert_outage_logged(_ours(caplog), ("taskiq-monitor state",), redis_pw.port, min_failures=4)
    assert PASSWORD not in caplog.text
