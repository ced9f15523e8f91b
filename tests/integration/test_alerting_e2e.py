"""End to end: real workers fail → the real failure-ratio rule fires → Alertmanager pages a webhook → resolves.

Everything runs on loopback ports chosen at start: ``redis-server`` (the shared broker fixture),
``taskiq-monitor worker`` with two worker processes running the demo tasks (enqueued by a separate producer process
with real ``.kiq()``), ``prometheus`` scraping the worker's ``/metrics`` every second with the rules built by
``taskiq_monitor.mixin.rules`` (same code, short windows: a 10 s failure-ratio window and a 2 s ``for:``),
``prometheus-alertmanager`` with the repository's ``alertmanager.yml`` (receiver URLs pointed at the test, waits
shortened), and a webhook receiver in this process. Servers are started by PID, stopped by their own
PID, and polled for readiness; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import queue
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskiq_monitor.mixin import rules as gen
from tests.integration.servers import Prometheus, RedisServer, Worker, free_port, http_get, produce, stop, wait_for
from tests.monitoring_stack import ALERTMANAGER_DIR, require_binary

FAILING_TASK = "score_message_task"
HEALTHY_TASK = "detect_language_task"
QUEUE_NAME = "taskiq_monitor_alerting_e2e"
STARTUP_TIMEOUT = 60.0
ALERT_TIMEOUT = 90.0


class Alertmanager:
    """`prometheus-alertmanager` with the repository's config (receivers pointed at ``webhook_port``)."""

    def __init__(self, workdir: Path, webhook_port: int) -> None:
        self.port = free_port()
        self.workdir = workdir / f"alertmanager-{self.port}"
        self.workdir.mkdir()
        config = write_alertmanager_config(self.workdir, webhook_port)
        self.log = open(self.workdir / "alertmanager.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                require_binary("prometheus-alertmanager"),
                f"--config.file={config}",
                f"--storage.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--cluster.listen-address=",  # no HA gossip port
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(lambda: self.proc.poll() is None and http_get(self.url + "/-/ready"), STARTUP_TIMEOUT, "alertmanager")

    def stop(self) -> None:
        stop(self.proc)
        self.log.close()


@pytest.fixture
def cleanup() -> Iterator[list[Any]]:
    """Servers appended here are stopped (by their own PID, newest first) when the test ends."""
    started: list[Any] = []
    yield started
    for server in reversed(started):
        server.stop()


# --------------------------------------------------------------------------------------------------------------
# Webhook receiver
# --------------------------------------------------------------------------------------------------------------


@dataclass
class Notification:
    path: str
    body: dict[str, Any]


class WebhookReceiver:
    def __init__(self) -> None:
        self.notifications: queue.Queue[Notification] = queue.Queue()
        received = self.notifications

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.put(Notification(self.path, json.loads(self.rfile.read(length))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, status: str, alertname: str, timeout: float, keep_busy: Callable[[], None]) -> Notification:
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while time.monotonic() < deadline:
            keep_busy()
            try:
                note = self.notifications.get(timeout=0.5)
            except queue.Empty:
                continue
            seen.append(f"{note.path} {note.body.get('status')} {note.body.get('groupLabels')}")
            if note.body.get("status") == status and note.body.get("groupLabels", {}).get("alertname") == alertname:
                return note
        raise AssertionError(f"no {status} notification for {alertname} within {timeout:.0f}s; got {seen}")


# --------------------------------------------------------------------------------------------------------------
# Configuration of the stack under test
# --------------------------------------------------------------------------------------------------------------

E2E_CONFIG = dataclasses.replace(
    gen.Config(),
    failure_ratio_window="10s",
    failure_for="2s",
    failure_min_volume=5,
)


def write_rules(tmp: Path) -> list[Path]:
    rules = tmp / "rules"
    rules.mkdir()
    paths = []
    for name, text in gen.build(E2E_CONFIG).items():
        (rules / name).write_text(text)
        paths.append(rules / name)
    return paths


def write_alertmanager_config(tmp: Path, webhook_port: int) -> Path:
    """The repository's alertmanager.yml with receivers pointed at the test and waits shortened."""
    config = yaml.safe_load((ALERTMANAGER_DIR / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            path = urllib.parse.urlsplit(webhook["url"]).path
            webhook["url"] = f"http://127.0.0.1:{webhook_port}{path}"
    for route in [config["route"], *config["route"].get("routes", [])]:
        route.update({"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"})
    shutil.copytree(ALERTMANAGER_DIR / "templates", tmp / "templates")
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# --------------------------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------------------------


def test_failure_burst_pages_through_alertmanager_and_resolves(
    tmp_path: Path, redis_server: RedisServer, cleanup: list[Any]
) -> None:
    # Real worker processes running the demo tasks with the monitoring middleware, one /metrics for both.
    worker = Worker(redis_server.url, tmp_path, queue=QUEUE_NAME, workers=2)
    cleanup.append(worker)

    with WebhookReceiver() as webhook:
        am = Alertmanager(tmp_path, webhook.port)
        cleanup.append(am)
        prom = Prometheus(
            tmp_path,
            [f"127.0.0.1:{worker.port}"],
            scrape_interval="1s",
            rule_files=write_rules(tmp_path),
            extra_config=yaml.safe_dump(
                {"alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{am.port}"]}]}]}}
            ),
        )
        cleanup.append(prom)
        wait_for(lambda: prom.query('up{job="taskiq"} == 1'), STARTUP_TIMEOUT, "prometheus scraping the worker")
        rules = json.loads(http_get(prom.url + "/api/v1/rules?type=alert"))["data"]["groups"]
        assert "TaskiqTaskHighFailureRate" in {r["name"] for g in rules for r in g["rules"]}

        sent = 0

        def kick(task_name: str, count: int, sim: dict[str, Any]) -> list[tuple[str, list[Any], dict[str, Any]]]:
            nonlocal sent
            sent += count
            return [(task_name, [sent + i], {"sim": sim}) for i in range(count)]

        # Failure burst: every run of FAILING_TASK raises ValueError, HEALTHY_TASK keeps succeeding.
        def failure_burst() -> None:
            plan = kick(FAILING_TASK, 10, {"fail": "ValueError"}) + kick(HEALTHY_TASK, 10, {})
            produce(redis_server.url, plan, kind="list", queue=QUEUE_NAME)

        firing = webhook.wait_for("firing", "TaskiqTaskHighFailureRate", ALERT_TIMEOUT, failure_burst)

        # Routed by severity to the pager receiver, grouped per alert and task type, annotations rendered.
        assert firing.path == "/alerts/critical"
        assert firing.body["receiver"] == "pager"
        assert firing.body["groupLabels"] == {"alertname": "TaskiqTaskHighFailureRate", "task_name": FAILING_TASK}
        (alert,) = firing.body["alerts"]
        assert alert["labels"]["severity"] == "critical"
        assert alert["labels"]["task_name"] == FAILING_TASK
        description = alert["annotations"]["description"]
        assert description.endswith(
            f"% of {FAILING_TASK} tasks failed over the last 10s (threshold 10%, at least 5 finished)."
        ), description
        assert float(description.split("%")[0]) > 10
        assert alert["annotations"]["runbook_url"] == "docs/runbook.md#taskiqtaskhighfailurerate"
        detail = f"/d/{E2E_CONFIG.task_detail_uid}?var-task_name={FAILING_TASK}"
        assert alert["annotations"]["dashboard_url"].endswith(detail)
        # The healthy task type never pages.
        assert not prom.query(f'ALERTS{{task_name="{HEALTHY_TASK}"}}')

        # Failures stop: the same task type succeeds again and the alert resolves.
        def recovery() -> None:
            produce(redis_server.url, kick(FAILING_TASK, 10, {}), kind="list", queue=QUEUE_NAME)

        resolved = webhook.wait_for("resolved", "TaskiqTaskHighFailureRate", ALERT_TIMEOUT, recovery)
        assert resolved.path == "/alerts/critical"
        (alert,) = resolved.body["alerts"]
        assert alert["status"] == "resolved"
        assert alert["labels"]["task_name"] == FAILING_TASK

        # The worker processes really ran the tasks: their counts reached Prometheus through the exporter.
        failed = prom.query(f'taskiq_tasks_completed_total{{task_name="{FAILING_TASK}",status="failed"}}')
        assert failed and float(failed[0]["value"][1]) >= 5
        errors = prom.query(f'taskiq_task_errors_total{{task_name="{FAILING_TASK}",error_type="ValueError"}}')
        assert errors and float(errors[0]["value"][1]) >= 5


def test_no_worker_alive_inhibits_backlog_alerts_in_alertmanager(tmp_path: Path, cleanup: list[Any]) -> None:
    """Alerts posted to a real Alertmanager with the repository config: the backlog alerts are muted."""
    with WebhookReceiver() as webhook:
        am = Alertmanager(tmp_path, webhook.port)
        cleanup.append(am)

        def alert(name: str, severity: str, **labels: str) -> dict[str, Any]:
            return {"labels": {"alertname": name, "severity": severity, **labels}, "annotations": {"summary": name}}

        posted = [
            alert("TaskiqNoWorkerAlive", "critical"),
            alert("TaskiqQueueBacklogGrowing", "warning", task_name=FAILING_TASK),
            alert("TaskiqOldestPendingTooOld", "warning", task_name=FAILING_TASK),
            alert("TaskiqTaskRetryStorm", "warning", task_name=FAILING_TASK),
        ]
        request = urllib.request.Request(
            f"{am.url}/api/v2/alerts",
            data=json.dumps(posted).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

        def states() -> dict[str, str] | None:
            alerts = json.loads(http_get(f"{am.url}/api/v2/alerts"))
            result = {a["labels"]["alertname"]: a["status"]["state"] for a in alerts}
            # Inhibition is computed asynchronously: wait until every alert has its final state.
            return result if len(result) == 4 and "unprocessed" not in result.values() else None

        got = wait_for(states, STARTUP_TIMEOUT, "alertmanager to process the alerts")
        assert got == {
            "TaskiqNoWorkerAlive": "active",
            "TaskiqQueueBacklogGrowing": "suppressed",
            "TaskiqOldestPendingTooOld": "suppressed",
            "TaskiqTaskRetryStorm": "active",
        }
        # Only the cause pages; the unrelated warning goes to the team receiver.
        paths = set()
        deadline = time.monotonic() + ALERT_TIMEOUT
        while paths != {"/alerts/critical", "/alerts/warning"} and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                note = webhook.notifications.get(timeout=0.5)
                paths.add(note.path)
                names = {a["labels"]["alertname"] for a in note.body["alerts"]}
                assert not names & {"TaskiqQueueBacklogGrowing", "TaskiqOldestPendingTooOld"}, names
        assert paths == {"/alerts/critical", "/alerts/warning"}
