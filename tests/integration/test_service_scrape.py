"""``/metrics`` against a hung Redis (a redis-server paused with SIGSTOP): the scrape ends well within Prometheus'
scrape_timeout, with ``taskiq_monitor_state_up 0`` and the worker metrics."""

from __future__ import annotations

import os
import signal
import time

from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from taskiq_monitor.metrics import TaskMetrics
from taskiq_monitor.service.app import create_app
from taskiq_monitor.settings import Settings
from tests.integration.servers import RedisServer, parse_metrics, sample

# The shipped prometheus.yml's (and Prometheus' default) scrape_timeout is 10 s; before the scrape's Redis deadline,
# two reads waiting for their 5 s socket timeouts took all of it. Generous for a slow machine, still clearly below.
SCRAPE_BOUND_SECONDS = 8.0


def test_get_metrics_with_redis_hung_reports_state_down_in_time(redis_srv: RedisServer) -> None:
    TaskMetrics(registry=REGISTRY).for_task("hung_redis_task").started.inc(1)
    assert redis_srv.proc is not None
    with TestClient(create_app(Settings(redis_url=redis_srv.url))) as client:
        healthy = parse_metrics(client.get("/metrics").text)
        assert sample(healthy, "taskiq_monitor_state_up") == 1
        assert ("taskiq_monitor_history_executions", ()) in healthy
        os.kill(redis_srv.proc.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            response = client.get("/metrics")
            elapsed = time.monotonic() - started
        finally:
            os.kill(redis_srv.proc.pid, signal.SIGCONT)
        assert response.status_code == 200
        assert elapsed < SCRAPE_BOUND_SECONDS, f"the scrape took {elapsed:.1f} s"
        down = parse_metrics(response.text)
        assert sample(down, "taskiq_monitor_state_up") == 0
        assert sample(down, "taskiq_tasks_started_total", task_name="hung_redis_task") == 1
        assert ("taskiq_monitor_history_executions", ()) not in down  # skipped, not waited for
        # Redis back: the next scrape reads it again (the skip was for that scrape only).
        assert sample(parse_metrics(client.get("/metrics").text), "taskiq_monitor_state_up") == 1
