"""End to end: real workers fail → the real failure-ratio rule fires → Alertmanager pages a webhook → resolves.

Everything runs on loopback ports chosen at start: ``redis-server`` (the broker), ``taskiq-monitor worker`` with two
worker processes running the demo tasks, ``prometheus`` scraping the worker's ``/metrics`` every second with the
rules built by ``prometheus/rules/generate.py`` (same code, short windows: a 10 s failure-ratio window and a 2 s
``for:``), ``prometheus-alertmanager`` with the repository's ``alertmanager.yml`` (receiver URLs pointed at the
test, waits shortened), and a webhook receiver in this process. Servers are started by PID, stopped by their own
PID, and polled for readiness; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/monitoring_stack.py
from monitoring_stack import ALERTMANAGER_DIR, REPO, load_generator, require_binary

FAILING_TASK = "score_message_task"
HEALTHY_TASK = "detect_language_task"
QUEUE_NAME = "taskiq_monitor_alerting_e2e"
STARTUP_TIMEOUT = 60.0
ALERT_TIMEOUT = 90.0

gen = load_generator()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: process {proc.pid} exited with {proc.returncode}")
        try:
            result = predicate()
        except (OSError, ValueError):  # connection refused/reset, HTTP errors, half-written responses
            result = None
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bytes(response.read())


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""


def start(name: str, args: list[str], tmp: Path, env: dict[str, str] | None = None) -> Server:
    log = tmp / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp)
    return Server(name, proc, log)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
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


def write_prometheus_config(tmp: Path, worker_port: int, alertmanager_port: int) -> Path:
    rules = tmp / "rules"
    rules.mkdir()
    for name, text in gen.build(E2E_CONFIG).items():
        (rules / name).write_text(text)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules/*.yml"],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager_port}"]}]}]},
        "scrape_configs": [
            {"job_name": "taskiq", "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
        ],
    }
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_alertmanager_config(tmp: Path, webhook_port: int) -> Path:
    """The repository's alertmanager.yml with receivers pointed at the test and waits shortened."""
    config = yaml.safe_load((ALERTMANAGER_DIR / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            path = urllib.parse.urlsplit(webhook["url"]).path
            webhook["url"] = f"http://127.0.0.1:{webhook_port}{path}"
    routes = [config["route"], *config["route"].get("routes", [])]
    for route in routes:
        route.update({"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"})
    shutil.copytree(ALERTMANAGER_DIR / "templates", tmp / "templates")
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def prometheus_query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = json.loads(http_get(url))
    assert body["status"] == "success", body
    return list(body["data"]["result"])


# --------------------------------------------------------------------------------------------------------------
# Task producer (the "app" side: kicks demo tasks by name onto the Redis queue)
# --------------------------------------------------------------------------------------------------------------


class Producer:
    def __init__(self, redis_url: str) -> None:
        from taskiq_redis import ListQueueBroker

        self.loop = asyncio.new_event_loop()
        self.broker = ListQueueBroker(redis_url, queue_name=QUEUE_NAME)
        self.loop.run_until_complete(self.broker.startup())
        self.sent = 0

    def kick(self, task_name: str, count: int, sim: dict[str, Any] | None = None) -> None:
        from taskiq.kicker import AsyncKicker

        async def send() -> None:
            for _ in range(count):
                self.sent += 1
                await AsyncKicker(task_name, self.broker, {}).kiq(message_id=self.sent, sim=sim or {})

        self.loop.run_until_complete(send())

    def close(self) -> None:
        self.loop.run_until_complete(self.broker.shutdown())
        self.loop.close()


# --------------------------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------------------------


def test_failure_burst_pages_through_alertmanager_and_resolves(tmp_path: Path, servers: list[Server]) -> None:
    prometheus = require_binary("prometheus")
    alertmanager = require_binary("prometheus-alertmanager")
    redis_server = require_binary("redis-server")

    # Broker.
    redis_port = free_port()
    servers.append(
        start(
            "redis",
            [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            tmp_path,
        )
    )
    import redis

    client = redis.Redis(host="127.0.0.1", port=redis_port)
    wait_until(client.ping, STARTUP_TIMEOUT, "redis-server", servers[-1].proc)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"

    # Real worker processes with the monitoring middleware, one /metrics for both.
    worker_port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "exporter"), os.environ.get("PYTHONPATH")])),
        "TASKIQ_MONITOR_DEMO_BROKER_URL": redis_url,
        "TASKIQ_MONITOR_DEMO_QUEUE_NAME": QUEUE_NAME,
    }
    worker = start(
        "worker",
        [
            sys.executable,
            "-c",
            "import sys; from taskiq_monitor.cli import main; sys.exit(main())",
            "worker",
            "taskiq_monitor.demo.tasks:broker",
            "--workers",
            "2",
            "--metrics-port",
            str(worker_port),
            "--metrics-dir",
            str(tmp_path / "metrics"),
        ],
        tmp_path,
        env=env,
    )
    servers.append(worker)
    metrics_url = f"http://127.0.0.1:{worker_port}/metrics"
    wait_until(
        lambda: (
            f'taskiq_tasks_completed_total{{status="failed",task_name="{FAILING_TASK}"}}'.encode()
            in http_get(metrics_url)
        ),
        STARTUP_TIMEOUT,
        "worker /metrics with the demo tasks registered",
        worker.proc,
    )

    with WebhookReceiver() as webhook:
        am_port = free_port()
        am = start(
            "alertmanager",
            [
                alertmanager,
                f"--config.file={write_alertmanager_config(tmp_path, webhook.port)}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
            tmp_path,
        )
        servers.append(am)
        wait_until(lambda: http_get(f"http://127.0.0.1:{am_port}/-/ready"), STARTUP_TIMEOUT, "alertmanager", am.proc)

        prom_port = free_port()
        prom = start(
            "prometheus",
            [
                prometheus,
                f"--config.file={write_prometheus_config(tmp_path, worker_port, am_port)}",
                f"--storage.tsdb.path={tmp_path / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--rules.alert.resend-delay=1s",
            ],
            tmp_path,
        )
        servers.append(prom)
        wait_until(lambda: http_get(f"http://127.0.0.1:{prom_port}/-/ready"), STARTUP_TIMEOUT, "prometheus", prom.proc)
        wait_until(
            lambda: prometheus_query(prom_port, 'up{job="taskiq"} == 1'),
            STARTUP_TIMEOUT,
            "prometheus scraping the worker",
            prom.proc,
        )
        rules = json.loads(http_get(f"http://127.0.0.1:{prom_port}/api/v1/rules?type=alert"))["data"]["groups"]
        assert "TaskiqTaskHighFailureRate" in {r["name"] for g in rules for r in g["rules"]}

        producer = Producer(redis_url)
        try:
            # Failure burst: every run of FAILING_TASK raises, HEALTHY_TASK keeps succeeding.
            def failure_burst() -> None:
                producer.kick(FAILING_TASK, 5, {"fail": "ValueError"})
                producer.kick(HEALTHY_TASK, 5)

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
            assert alert["annotations"]["dashboard_url"].endswith(f"/d/taskiq-task-detail?var-task_name={FAILING_TASK}")
            # The healthy task type never pages.
            assert not prometheus_query(prom_port, f'ALERTS{{task_name="{HEALTHY_TASK}"}}')

            # Failures stop: the same task type succeeds again and the alert resolves.
            def recovery() -> None:
                producer.kick(FAILING_TASK, 5)

            resolved = webhook.wait_for("resolved", "TaskiqTaskHighFailureRate", ALERT_TIMEOUT, recovery)
            assert resolved.path == "/alerts/critical"
            (alert,) = resolved.body["alerts"]
            assert alert["status"] == "resolved"
            assert alert["labels"]["task_name"] == FAILING_TASK
        finally:
            producer.close()

        # The workers really ran the tasks (numbers come from the worker processes through the exporter).
        failed = prometheus_query(
            prom_port, f'taskiq_tasks_completed_total{{task_name="{FAILING_TASK}",status="failed"}}'
        )
        assert failed and float(failed[0]["value"][1]) >= 5
        errors = prometheus_query(
            prom_port, f'taskiq_task_errors_total{{task_name="{FAILING_TASK}",error_type="ValueError"}}'
        )
        assert errors and float(errors[0]["value"][1]) >= 5


def test_no_worker_alive_inhibits_backlog_alerts_in_alertmanager(tmp_path: Path, servers: list[Server]) -> None:
    """Alerts posted to a real Alertmanager with the repository config: the backlog alerts are muted."""
    alertmanager = require_binary("prometheus-alertmanager")
    with WebhookReceiver() as webhook:
        am_port = free_port()
        am = start(
            "alertmanager",
            [
                alertmanager,
                f"--config.file={write_alertmanager_config(tmp_path, webhook.port)}",
                f"--storage.path={tmp_path / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{am_port}",
                "--cluster.listen-address=",
            ],
            tmp_path,
        )
        servers.append(am)
        base = f"http://127.0.0.1:{am_port}"
        wait_until(lambda: http_get(f"{base}/-/ready"), STARTUP_TIMEOUT, "alertmanager", am.proc)

        def alert(name: str, severity: str, **labels: str) -> dict[str, Any]:
            return {"labels": {"alertname": name, "severity": severity, **labels}, "annotations": {"summary": name}}

        posted = [
            alert("TaskiqNoWorkerAlive", "critical"),
            alert("TaskiqQueueBacklogGrowing", "warning", task_name=FAILING_TASK),
            alert("TaskiqOldestPendingTooOld", "warning", task_name=FAILING_TASK),
            alert("TaskiqTaskRetryStorm", "warning", task_name=FAILING_TASK),
        ]
        request = urllib.request.Request(
            f"{base}/api/v2/alerts",
            data=json.dumps(posted).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

        def states() -> dict[str, str] | None:
            alerts = json.loads(http_get(f"{base}/api/v2/alerts"))
            result = {a["labels"]["alertname"]: a["status"]["state"] for a in alerts}
            # Inhibition is computed asynchronously: wait until every alert has its final state.
            return result if len(result) == 4 and "unprocessed" not in result.values() else None

        got = wait_until(states, STARTUP_TIMEOUT, "alertmanager to process the alerts", am.proc)
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
