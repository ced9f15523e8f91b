"""The exporter's HTTP endpoints: exposition formats, health, and the optional bearer token."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from taskiq_monitor.metrics import TaskMetrics
from taskiq_monitor.service.app import create_app, metrics_asgi_app
from taskiq_monitor.settings import Settings


def test_get_metrics_prometheus_text_by_default() -> None:
    TaskMetrics(registry=REGISTRY).for_task("exposed_task").started.inc(1)
    with TestClient(create_app(Settings())) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert 'taskiq_tasks_started_total{task_name="exposed_task"} 1.0' in response.text


def test_get_metrics_openmetrics_when_asked() -> None:
    TaskMetrics(registry=REGISTRY).for_task("om_task").started.inc(1)
    with TestClient(create_app(Settings())) as client:
        response = client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_get_metrics_requires_bearer_token_when_configured() -> None:
    app = create_app(Settings(bearer_token="s3cret"))
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Basic s3cret"}).status_code == 401
        ok = client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200
        # Liveness probes carry no secrets and reveal none.
        assert client.get("/healthz").status_code == 200


def test_get_healthz_reports_processes_of_metrics_dir(tmp_path: Path) -> None:
    (tmp_path / "gauge_livesum_4242.db").write_bytes(b"")
    with TestClient(create_app(Settings(metrics_dir=tmp_path))) as client:
        body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["processes_reporting"] == 1


def test_healthz_and_metrics_before_the_supervisor_created_the_metrics_dir_say_why_without_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # `worker` binds its port first and creates the directory just after: a probe or a scrape in between (the demo
    # polls /healthz from the start) got a 500 and a FileNotFoundError traceback in the log. Not ready yet is a 503
    # with the reason, as for a directory removed while serving (the exporter cannot tell the two apart).
    missing = tmp_path / "not-yet"
    caplog.set_level(logging.DEBUG, logger="taskiq_monitor")
    with TestClient(create_app(Settings(metrics_dir=missing)), raise_server_exceptions=False) as client:
        health = client.get("/healthz")
        metrics = client.get("/metrics")
    assert health.status_code == 503 and health.json()["error"] == f"metrics directory {missing} does not exist"
    assert metrics.status_code == 503
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.exc_info]
    assert not missing.exists(), "the exporter never creates the directory: the supervisor claims it"


def test_a_metrics_directory_removed_while_serving_is_a_503_with_the_reason_not_a_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: /metrics and /healthz raised FileNotFoundError (a 500 and a traceback in the log at every scrape and
    # probe) — also in the moment between the worker's bind and its directory's creation (`demo --broker`).
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "gauge_livesum_4242.db").write_bytes(b"")
    with TestClient(create_app(Settings(metrics_dir=directory)), raise_server_exceptions=False) as client:
        assert client.get("/healthz").status_code == 200
        shutil.rmtree(directory)
        caplog.set_level(logging.DEBUG, logger="taskiq_monitor")
        health = client.get("/healthz")
        scrapes = [client.get("/metrics") for _ in range(3)]
    # A liveness probe fails (a restart recreates the directory), and says why.
    assert health.status_code == 503
    assert health.json() == {
        "status": "error",
        "metrics_dir": str(directory),
        "error": f"metrics directory {directory} does not exist",
    }
    # A failed scrape (so that TaskiqExporterDown fires: these worker metrics are lost), with a one-line reason.
    assert [r.status_code for r in scrapes] == [503] * 3
    assert scrapes[0].text.startswith(f"metrics directory {directory} does not exist")
    assert scrapes[0].text.count("\n") == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(f"taskiq-monitor metrics: metrics directory {directory} does")
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.exc_info]


def test_metrics_asgi_app_serves_the_registry() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    TaskMetrics(registry=REGISTRY).for_task("app_side_task").enqueued.inc(1)
    app = Starlette(routes=[Mount("/metrics", app=metrics_asgi_app(Settings()))])
    with TestClient(app) as client:
        response = client.get("/metrics/")
    assert 'taskiq_tasks_enqueued_total{task_name="app_side_task"} 1.0' in response.text


def test_metrics_asgi_app_serves_this_process_when_prometheus_client_is_single_process(tmp_path: Path) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    # The settings name a directory, but this process's prometheus_client writes to memory: serving the
    # (empty) directory would hide the app's enqueue counts.
    TaskMetrics(registry=REGISTRY).for_task("in_memory_task").enqueued.inc(1)
    app = Starlette(routes=[Mount("/metrics", app=metrics_asgi_app(Settings(metrics_dir=tmp_path)))])
    with TestClient(app) as client:
        response = client.get("/metrics/")
    assert 'taskiq_tasks_enqueued_total{task_name="in_memory_task"} 1.0' in response.text
