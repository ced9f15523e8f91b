"""``/metrics`` against a hung Redis (a redis-server paused with SIGSTOP): the scrape's first Redis read gives up at
the scrape's deadline, the next is skipped, and the scrape is served with ``taskiq_monitor_state_up 0`` and the worker
metrics (it used to wait for two 5 s socket timeouts: all of Prometheus' 10 s scrape_timeout)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from taskiq_monitor.metrics import TaskMetrics
from taskiq_monitor.service import history, scrape_budget, state_collector
from taskiq_monitor.service.app import create_app
from taskiq_monitor.settings import Settings
from tests.integration.servers import RedisServer, parse_metrics, sample


def test_get_metrics_with_redis_hung_gives_up_at_the_scrapes_deadline_and_reports_state_down(
    redis_srv: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcomes: list[str] = []  # how each Redis read of the collectors ended

    def recorded(fn: Callable[[], Any]) -> Any:
        try:
            result = scrape_budget.read(fn)
        except Exception as exc:
            outcomes.append(type(exc).__name__)
            raise
        outcomes.append("ok")
        return result

    monkeypatch.setattr(state_collector, "read", recorded)
    monkeypatch.setattr(history, "read", recorded)
    TaskMetrics(registry=REGISTRY).for_task("hung_redis_task").started.inc(1)
    assert redis_srv.proc is not None
    with TestClient(create_app(Settings(redis_url=redis_srv.url))) as client:
        healthy = parse_metrics(client.get("/metrics").text)
        assert sample(healthy, "taskiq_monitor_state_up") == 1
        assert ("taskiq_monitor_history_executions", ()) in healthy
        os.kill(redis_srv.proc.pid, signal.SIGSTOP)
        outcomes.clear()
        try:
            response = client.get("/metrics")
        finally:
            os.kill(redis_srv.proc.pid, signal.SIGCONT)
        assert response.status_code == 200
        # The builtin TimeoutError is the scrape's deadline (redis-py's own would be redis.exceptions.TimeoutError,
        # after the 5 s socket timeout); the other read was not attempted.
        assert sorted(outcomes) == ["StoreSkipped", "TimeoutError"], outcomes
        assert scrape_budget.SCRAPE_REDIS_SECONDS < 5.0  # below the socket timeout: the deadline comes first
        down = parse_metrics(response.text)
        assert sample(down, "taskiq_monitor_state_up") == 0
        assert sample(down, "taskiq_tasks_started_total", task_name="hung_redis_task") == 1
        assert ("taskiq_monitor_history_executions", ()) not in down  # skipped, not waited for
        # Redis back: the next scrape reads it again (the skip was for that scrape only).
        assert sample(parse_metrics(client.get("/metrics").text), "taskiq_monitor_state_up") == 1
