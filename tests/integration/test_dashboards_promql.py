"""(b) Every PromQL expression of the dashboards, run by a real Prometheus that scraped the demo workload.

The demo (``python -m taskiq_monitor.cli demo``) serves /metrics on a free loopback port; a real ``prometheus``
binary scrapes it every second (job="taskiq", as in the stack's Prometheus config). Template variables are
substituted the way Grafana would with the default selections ($task_name, $job → ``.*``,
$__rate_interval → 1m, $__range → 1m, see grafana/dashboard_queries.py), and every expression must return at
least one series.

The demo runs in-memory by default (tasks and exporter in one process, no external service). With
``TASKIQ_MONITOR_DEMO_BROKER_URL=redis://…`` in the environment the demo's settings pick it up and the same test
runs against real ``taskiq worker`` processes consuming from Redis.

Metrics that other components export (the Redis-backed pending gauges, the worker heartbeat, the log shipper's
counters) may not be served by the demo yet. An expression is excused only when a metric it reads is *absent
from the scrape*; as soon as the exporter serves it, the expression must return data like every other.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "grafana" / "dashboards"

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus binary not installed")


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


dq = _load("taskiq_grafana_queries_it", ROOT / "grafana" / "dashboard_queries.py")

# Minimum history before querying: enough for rate()/increase() over 1m windows to see several samples.
WARMUP_SECONDS = 15


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return bytes(resp.read())


def _poll(what: str, check: Any, timeout: float, proc: subprocess.Popen[bytes]) -> Any:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"{what}: process {proc.pid} exited with {proc.returncode}")
        try:
            result = check()
            if result:
                return result
        except OSError as exc:
            last = exc
        time.sleep(0.25)
    raise AssertionError(f"{what} not ready within {timeout}s (last error: {last})")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def demo_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port = _free_port()
    log = (tmp_path_factory.mktemp("demo") / "demo.log").open("wb")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "exporter") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taskiq_monitor.cli",
            "demo",
            "--port",
            str(port),
            "--duration",
            "300",
            "--rate",
            "40",
            "--seed",
            "7",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )
    try:
        _poll(
            "demo /metrics", lambda: b"taskiq_tasks_started_total" in _get(f"http://127.0.0.1:{port}/metrics"), 60, proc
        )
        yield port
    finally:
        _stop(proc)
        log.close()


@pytest.fixture(scope="module")
def prometheus_url(demo_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: taskiq\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{demo_port}']\n"
    )
    port = _free_port()
    log = (workdir / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--enable-feature=exemplar-storage",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _poll("prometheus /-/ready", lambda: _get(f"{url}/-/ready") is not None, 60, proc)
        # a fresh target's first scrape may take a few seconds: poll, then let history accumulate
        _poll("first scrape", lambda: _query(url, "taskiq_tasks_started_total"), 60, proc)
        first = time.monotonic()
        _poll("completions", lambda: _query(url, 'sum(taskiq_tasks_completed_total{status="success"}) > 0'), 60, proc)
        remaining = WARMUP_SECONDS - (time.monotonic() - first)
        if remaining > 0:
            time.sleep(remaining)
        yield url
    finally:
        _stop(proc)
        log.close()


def _api(url: str, path: str, **params: str) -> Any:
    body = json.loads(_get(f"{url}{path}?{urllib.parse.urlencode(params)}", timeout=30))
    assert body["status"] == "success", body
    return body["data"]


def _query(url: str, expr: str) -> list[dict[str, Any]]:
    data = _api(url, "/api/v1/query", query=expr)
    result = data["result"]
    return result if data["resultType"] == "vector" else [{"value": result}]


def _cases() -> list[tuple[str, str, str]]:
    cases = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        model = json.loads(path.read_text())
        seen: set[str] = set()
        for q in dq.queries(model):
            if q.kind != "prometheus":
                continue
            expr = dq.substitute(q.expr, model)
            if expr in seen:
                continue
            seen.add(expr)
            cases.append((model["uid"], q.panel, expr))
    return cases


CASES = _cases()


@pytest.fixture(scope="module")
def scraped_metrics(prometheus_url: str) -> set[str]:
    names = _api(prometheus_url, "/api/v1/label/__name__/values")
    return {dq.metric_names(n).pop() for n in names if n.startswith("taskiq_")}


def test_cases_cover_all_dashboards() -> None:
    assert {uid for uid, _, _ in CASES} == {"taskiq-overview", "taskiq-task-detail", "taskiq-live"}
    assert len(CASES) >= 40


@pytest.mark.parametrize(("uid", "panel", "expr"), CASES, ids=[f"{u}:{p}" for u, p, _ in CASES])
def test_promql_expression_returns_data(
    prometheus_url: str, scraped_metrics: set[str], uid: str, panel: str, expr: str
) -> None:
    result = _query(prometheus_url, expr)
    if not result:
        absent = dq.metric_names(expr) - scraped_metrics
        if absent:
            pytest.xfail(f"not exported by the demo yet: {sorted(absent)}")
    assert result, f"{uid} / {panel}: no data for {expr}"


def test_health_card_values_are_plausible(prometheus_url: str) -> None:
    model = json.loads((DASHBOARDS / "taskiq-overview.json").read_text())
    panels = model["panels"]
    start = next(i for i, p in enumerate(panels) if p.get("repeat") == "task_name")
    cards = {p["title"]: dq.substitute(p["targets"][0]["expr"], model) for p in panels[start + 1 : start + 7]}
    successes = float(_query(prometheus_url, cards["Success (range)"])[0]["value"][1])
    assert successes > 0
    rate = float(_query(prometheus_url, cards["Success rate (24h)"])[0]["value"][1])
    assert 0 < rate <= 1
    avg = float(_query(prometheus_url, cards["Avg duration (24h)"])[0]["value"][1])
    assert 0 < avg < 1800


def test_per_task_queries_return_one_series_per_task_type(prometheus_url: str) -> None:
    model = json.loads((DASHBOARDS / "taskiq-overview.json").read_text())
    panel = next(p for p in model["panels"] if p["title"] == "Throughput by task")
    result = _query(prometheus_url, dq.substitute(panel["targets"][0]["expr"], model))
    assert len({r["metric"]["task_name"] for r in result}) == 15


def test_template_variable_queries_find_values(prometheus_url: str) -> None:
    model = json.loads((DASHBOARDS / "taskiq-overview.json").read_text())
    found = {}
    for q in dq.variable_queries(model):
        selector, label = dq.substitute(q.expr, model)[len("label_values(") : -1].rsplit(",", 1)
        series = _api(prometheus_url, "/api/v1/series", **{"match[]": selector.strip()})
        found[label.strip()] = {s[label.strip()] for s in series}
    assert found["job"] == {"taskiq"}
    assert len(found["task_name"]) == 15
