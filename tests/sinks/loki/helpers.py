"""Shared by the tests of the Loki sink package: fast timers, events, counters, polled waits."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry

from taskiq_monitor.events import TaskEvent
from taskiq_monitor.sinks.loki import LokiSink

FAST = {
    "loki_batch_wait_seconds": 0.05,
    "loki_backoff_initial_seconds": 0.05,
    "loki_backoff_max_seconds": 0.2,
    "loki_retries": 1,
    "loki_connect_timeout_seconds": 0.5,
    "loki_timeout_seconds": 0.5,
    "loki_flush_timeout_seconds": 2.0,
}

# make_sink(**settings overrides) -> (sink, its registry); the fixture is in conftest.py
MakeSink = Callable[..., tuple[LokiSink, CollectorRegistry]]


def event(i: int, status: str = "success", task: str = "score_message_task", **kw: Any) -> TaskEvent:
    return TaskEvent(status=status, task_id=f"task-{i}", task_name=task, timestamp=time.time(), **kw)


def counted(registry: CollectorRegistry, result: str) -> float:
    return registry.get_sample_value("taskiq_monitor_log_records_total", {"result": result}) or 0.0


def flush_within(sink: LokiSink, limit: float) -> None:
    """``sink.flush_sync()`` on another thread, which must return within ``limit`` (a polled, generous deadline)."""
    thread = threading.Thread(target=sink.flush_sync, name="test-flush", daemon=True)
    thread.start()
    wait(lambda: not thread.is_alive(), limit)


def wait(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met")
