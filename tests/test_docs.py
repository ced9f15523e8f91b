"""The guide (docs/integration.md, docs/scaling.md): numbers come from the code, code compiles, links resolve."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

import taskiq_monitor
from taskiq_monitor.metrics import METRICS, MONITOR_COMPONENTS, TaskMetrics
from taskiq_monitor.settings import DEFAULT_DURATION_BUCKETS, DEFAULT_QUEUE_WAIT_BUCKETS
from tests.promql_contract import selector_names

REPO = Path(__file__).resolve().parents[1]
DOCS = ["integration.md", "scaling.md", "configuration.md"]


def series_per_task_type() -> Counter[str]:
    registry = CollectorRegistry()
    TaskMetrics(registry=registry).register_tasks(["t"])
    counts: Counter[str] = Counter()
    for family in registry.collect():
        for sample in family.samples:
            if sample.labels.get("task_name") == "t" and not sample.name.endswith("_created"):
                counts[family.name] += 1
    return counts


def scaling_table() -> dict[str, int]:
    text = (REPO / "docs" / "scaling.md").read_text()
    rows = re.findall(r"^\| `(taskiq_\w+)` \| (\d+) \|", text, re.M)
    return {name: int(count) for name, count in rows}


def test_series_counts_match_the_metric_contract() -> None:
    counts = series_per_task_type()
    table = scaling_table()
    for family, count in counts.items():
        name = family + "_total" if METRICS.get(family + "_total", ("",))[0] == "counter" else family
        assert table[name] == count, name
    total = sum(counts.values())
    text = (REPO / "docs" / "scaling.md").read_text()
    assert f"| **total** | **{total}** |" in text
    assert 3 * (len(DEFAULT_DURATION_BUCKETS) + 3) == counts["taskiq_task_duration_seconds"]
    assert f"{len(DEFAULT_DURATION_BUCKETS)} buckets" in text
    assert f"{len(DEFAULT_QUEUE_WAIT_BUCKETS)} buckets" in text


def test_per_target_monitoring_series_are_every_component() -> None:
    # Every component is exported at zero from start-up (alerts and dashboards see it before any failure).
    registry = CollectorRegistry()
    TaskMetrics(registry=registry).register_tasks(["t"])
    components = {
        s.labels["component"] for f in registry.collect() for s in f.samples if s.name == "taskiq_monitor_errors_total"
    }
    assert components == set(MONITOR_COMPONENTS)
    text = (REPO / "docs" / "scaling.md").read_text()
    assert f"`taskiq_monitor_errors_total{{component}}` (one per component, {len(MONITOR_COMPONENTS)}," in text


# What a process that only calls .kiq() exports: the enqueue counter (post_send) and the monitoring's own series
# (its failures; the state and Loki sinks that ship its `pending` events).
APP_SIDE_METRICS = {
    "taskiq_tasks_enqueued_total",
    "taskiq_monitor_errors_total",
    "taskiq_monitor_state_events_total",
    "taskiq_monitor_state_buffer_events",
    "taskiq_monitor_log_records_total",
    "taskiq_monitor_log_queue_records",
    "taskiq_monitor_log_spool_bytes",
}


def test_app_side_relabelling_keeps_every_series_an_alert_reads_from_the_app() -> None:
    assert APP_SIDE_METRICS.issubset(METRICS)
    text = (REPO / "docs" / "scaling.md").read_text()
    block = re.search(r"```yaml\n(\s*- job_name: taskiq-app\n.*?)```", text, re.S)
    assert block is not None, "scaling.md: the taskiq-app relabelling example"
    (job,) = yaml.safe_load(block.group(1))
    (rule,) = job["metric_relabel_configs"]
    assert rule["action"] == "keep" and rule["source_labels"] == ["__name__"]
    alerts = yaml.safe_load((REPO / "prometheus" / "rules" / "taskiq-alerts.yml").read_text())
    read = set()
    for group in alerts["groups"]:
        for alert in group["rules"]:
            if "taskiq-app" in alert["expr"]:
                read |= selector_names(alert["expr"])
    needed = read & APP_SIDE_METRICS
    assert "taskiq_monitor_state_events_total" in needed  # the check reads the rules it means to
    dropped = sorted(name for name in needed if not re.fullmatch(rule["regex"], name))
    assert not dropped, f"the documented relabelling drops {dropped}: their alerts could never fire for the app"


def test_worked_example_arithmetic() -> None:
    per_type = sum(series_per_task_type().values())
    text = (REPO / "docs" / "scaling.md").read_text()
    assert f"10 × 15 × {per_type} = {10 * 15 * per_type:,}" in text
    assert f"4 × 15 × {per_type} = {4 * 15 * per_type:,}" in text
    low, high = 10 * 15 * per_type + 750 + 60, 10 * 15 * per_type + 750 + 4 * 15 * per_type
    assert f"≈ {round(low, -3):,}–{round(high, -2):,} active series" in text
    assert f"{round(low / 15, -1):,.0f}–{round(high / 15, -1):,.0f} samples/s" in text


@pytest.mark.parametrize("doc", DOCS)
def test_python_snippets_compile(doc: str) -> None:
    text = (REPO / "docs" / doc).read_text()
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        compile(block, f"{doc} snippet", "exec")


def test_integration_guide_uses_real_api() -> None:
    text = (REPO / "docs" / "integration.md").read_text()
    from taskiq_monitor import tracing

    assert "taskiq_monitor.metrics_asgi_app()" in text and callable(taskiq_monitor.metrics_asgi_app)
    for name in ("setup_tracing", "instrument_broker"):
        assert name in text and callable(getattr(tracing, name))
    assert "from taskiq_monitor import MonitoringMiddleware" in text
    for flag in ("--metrics-host", "--metrics-port", "--metrics-dir"):
        assert flag in text


def anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file: lower case, punctuation but ``-``/``_`` dropped,
    spaces as ``-``, a repeated heading suffixed ``-1``, ``-2``…"""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    found: set[str] = set()
    seen: Counter[str] = Counter()
    for heading in re.findall(r"^#{1,6} (.+)$", text, re.M):
        plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
        slug = re.sub(r"[^\w\- ]", "", plain.strip().lower()).replace(" ", "-")
        found.add(f"{slug}-{seen[slug]}" if seen[slug] else slug)
        seen[slug] += 1
    return found


MARKDOWN = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", MARKDOWN, ids=lambda path: path.name)
def test_relative_links_and_anchors_resolve(doc: Path) -> None:
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not checked offline
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path) if path else doc
        assert resolved.exists(), f"{doc.name}: broken link {target}"
        if anchor and resolved.suffix == ".md":
            assert anchor in anchors(resolved), f"{doc.name}: no heading for #{anchor} in {resolved.name}"


def test_anchor_check_finds_headings_as_github_does() -> None:
    runbook = anchors(REPO / "docs" / "runbook.md")
    assert "taskiqtaskhighfailurerate" in runbook and "taskiqtaskstuck" in runbook
    loki = anchors(REPO / "docs" / "loki.md")
    assert "shipping-from-the-exporter-instead-loki_shipperexporter" in loki
    assert "short-attempts-one-record" in loki


def test_loki_doc_record_schema_lists_exactly_the_record_fields() -> None:
    """The event record is a public contract (Loki lines, the live feed, the history): its table names every field."""
    from taskiq_monitor.events import SCHEMA_VERSION, TaskEvent, to_record

    text = (REPO / "docs" / "loki.md").read_text()
    section = text.split(f"## Record schema (`schema_version` {SCHEMA_VERSION})", 1)[1].split("\n#", 1)[0]
    documented = re.findall(r"^\| `(\w+)`\s+\|", section, re.M)
    record = to_record(TaskEvent(status="success", task_id="t", task_name="n", timestamp=0.0))
    assert documented == list(record)
