"""(b) Every PromQL expression of the dashboards, run by a real Prometheus that scraped the demo workload.

The demo (``python -m taskiq_monitor.cli demo``) serves /metrics on a free loopback port and ships its task events
to the Loki push-protocol double (``tests/loki_double.py``); a real ``prometheus`` binary scrapes it every second
(job="taskiq", as in the stack's Prometheus config). Template variables are substituted the way Grafana would with
the default selections ($task_name, $job → ``.*``, $__rate_interval → 1m, $__range → 1m, see
tests/dashboard_queries.py), and every expression must return at least one series — nothing is excused.

The scrape must hold every family of ``taskiq_monitor.metrics.METRICS``: the task metrics, the shared state (the
in-memory demo's in-process state store: pending, oldest pending age, workers, expired, state up, live clients,
state events) and the Loki shipper's own metrics. The demo runs in-memory by default (tasks and exporter in one
process, no external service). With ``TASKIQ_MONITOR_DEMO_BROKER_URL=redis://…`` in the environment the demo's
settings pick it up and the same test runs against real ``taskiq worker`` processes consuming from Redis.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskiq_monitor.metrics import METRICS
from taskiq_monitor.mixin.config import CONFIG
from tests import dashboard_queries as dq
from tests.integration.servers import PYTHONPATH, Prometheus, free_port, http_get, stop, wait_for
from tests.loki_double import LokiPushDouble

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "grafana" / "dashboards"

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus binary not installed")


# Minimum history before querying: enough for rate()/increase() over 1m windows to see several samples.
WARMUP_SECONDS = 15


@pytest.fixture(scope="module")
def loki() -> Iterator[LokiPushDouble]:
    with LokiPushDouble(keep_raw=False) as double:
        yield double


@pytest.fixture(scope="module")
def demo_port(tmp_path_factory: pytest.TempPathFactory, loki: LokiPushDouble) -> Iterator[int]:
    port = free_port()
    workdir = tmp_path_factory.mktemp("demo")
    log = (workdir / "demo.log").open("wb")
    env = dict(
        os.environ,
        PYTHONPATH=PYTHONPATH,
        TASKIQ_MONITOR_LOKI_URL=loki.url,
        TASKIQ_MONITOR_LOKI_SPOOL_DIR=str(workdir / "spool"),
        TASKIQ_MONITOR_LOKI_BATCH_WAIT_SECONDS="0.2",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
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

    def serving() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"demo exited with {proc.returncode}: {(workdir / 'demo.log').read_text()[-2000:]}")
        return "taskiq_tasks_started_total" in http_get(f"http://127.0.0.1:{port}/metrics")

    try:
        wait_for(serving, 60, "demo /metrics", interval=0.25)
        yield port
    finally:
        stop(proc, timeout=20)
        log.close()


@pytest.fixture(scope="module")
def prometheus_url(demo_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    prometheus = Prometheus(tmp_path_factory.mktemp("prometheus"), [f"127.0.0.1:{demo_port}"])
    url = prometheus.url
    try:
        # a fresh target's first scrape may take a few seconds: poll, then let history accumulate
        wait_for(lambda: _query(url, "taskiq_tasks_started_total"), 60, "first scrape", interval=0.25)
        first = time.monotonic()
        wait_for(
            lambda: _query(url, 'sum(taskiq_tasks_completed_total{status="success"}) > 0'),
            60,
            "completions",
            interval=0.25,
        )
        remaining = WARMUP_SECONDS - (time.monotonic() - first)
        if remaining > 0:
            time.sleep(remaining)
        yield url
    finally:
        prometheus.stop()


def _api(url: str, path: str, **params: str) -> Any:
    body = json.loads(http_get(f"{url}{path}?{urllib.parse.urlencode(params)}", timeout=30))
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


def test_cases_cover_all_dashboards() -> None:
    assert {uid for uid, _, _ in CASES} == {CONFIG.overview_uid, CONFIG.task_detail_uid, CONFIG.live_uid}
    assert len(CASES) >= 40


def test_demo_scrape_has_every_metric_of_the_contract(prometheus_url: str, loki: LokiPushDouble) -> None:
    """The precondition of the strict check below: every family of METRICS is scraped (histograms as _bucket)."""
    names = set(_api(prometheus_url, "/api/v1/label/__name__/values"))
    missing = [
        name for name, (kind, _) in METRICS.items() if (name + "_bucket" if kind == "histogram" else name) not in names
    ]
    assert missing == []
    assert loki.entries, "the demo shipped no event to the Loki double"


@pytest.mark.parametrize(("uid", "panel", "expr"), CASES, ids=[f"{u}:{p}" for u, p, _ in CASES])
def test_promql_expression_returns_data(prometheus_url: str, uid: str, panel: str, expr: str) -> None:
    assert _query(prometheus_url, expr), f"{uid} / {panel}: no data for {expr}"


def test_an_expression_on_a_metric_the_code_does_not_emit_returns_no_data(prometheus_url: str) -> None:
    """The check above can fail: a misspelt metric (or a matcher that selects nothing) has no data."""
    assert _query(prometheus_url, 'max(taskiq_worker{job=~".*"})') == []
    assert _query(prometheus_url, 'sum(taskiq_tasks_pending{job=~".*", task_name="no_such_task"})') == []


def _overview() -> dict[str, Any]:
    return json.loads((DASHBOARDS / f"{CONFIG.overview_uid}.json").read_text())


def test_health_card_values_are_plausible(prometheus_url: str) -> None:
    model = _overview()
    row = next(p for p in model["panels"] if p.get("repeat") == "task_name")
    cards = {p["title"]: dq.substitute(p["targets"][0]["expr"], model) for p in row["panels"]}
    successes = float(_query(prometheus_url, cards["Success (range)"])[0]["value"][1])
    assert successes > 0
    rate = float(_query(prometheus_url, cards["Success rate (24h)"])[0]["value"][1])
    assert 0 < rate <= 1
    avg = float(_query(prometheus_url, cards["Avg duration (24h)"])[0]["value"][1])
    assert 0 < avg < 1800


def test_per_task_queries_return_one_series_per_task_type(prometheus_url: str) -> None:
    model = _overview()
    panel = next(p for p in model["panels"] if p["title"] == "Throughput by task")
    result = _query(prometheus_url, dq.substitute(panel["targets"][0]["expr"], model))
    assert len({r["metric"]["task_name"] for r in result}) == 15


def test_template_variable_queries_find_values(prometheus_url: str) -> None:
    model = _overview()
    found = {}
    for q in dq.variable_queries(model):
        selector, label = dq.substitute(q.expr, model)[len("label_values(") : -1].rsplit(",", 1)
        series = _api(prometheus_url, "/api/v1/series", **{"match[]": selector.strip()})
        found[label.strip()] = {s[label.strip()] for s in series}
    assert found["job"] == {"taskiq"}
    assert len(found["task_name"]) == 15


def test_health_table_has_a_plausible_row_per_task_type(prometheus_url: str) -> None:
    """Each column of the Overview's health table, run as Grafana would: one value per task type, and the values
    make sense (counts are whole and non-negative, the success rate a ratio, the mean a duration)."""
    model = _overview()
    table = next(p for p in model["panels"] if p["title"] == "Health by task type")
    columns = table["transformations"][1]["options"]["renameByName"]
    values: dict[str, dict[str, float]] = {}
    for target in table["targets"]:
        result = _query(prometheus_url, dq.substitute(target["expr"], model))
        column = columns[f"Value #{target['refId']}"]
        values[column] = {r["metric"]["task_name"]: float(r["value"][1]) for r in result}
        assert len(values[column]) == len(result), f"{column}: more than one series per task type"
    task_types = set(values["Success (range)"])
    assert len(task_types) == 15
    for column in ("Pending", "Running", "Failed (range)"):
        assert set(values[column]) == task_types, column
    for column in ("Pending", "Running", "Success (range)", "Failed (range)"):
        assert all(v >= 0 for v in values[column].values()), column
    assert sum(values["Success (range)"].values()) > 0
    rates = values[f"Success rate ({CONFIG.health_window})"]
    assert rates and set(rates) <= task_types and all(0 <= v <= 1 for v in rates.values())
    means = values[f"Avg duration ({CONFIG.health_window})"]
    assert means and set(means) <= task_types and all(0 < v < 1800 for v in means.values())
