"""The metric contract in code (metrics.METRICS) is what the README documents and what the exporter emits."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry

from taskiq_monitor.metrics import METRICS, TaskMetrics

README = Path(__file__).parents[1] / "README.md"


def readme_metrics() -> dict[str, tuple[str, tuple[str, ...]]]:
    rows = re.findall(r"^\| `(taskiq_\w+)` \| (\w+) \|([^|]*)\|", README.read_text(), flags=re.M)
    return {name: (kind, tuple(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows}


def test_readme_metrics_table_matches_code() -> None:
    assert readme_metrics() == METRICS


def test_task_metrics_emit_exactly_the_core_contract() -> None:
    registry = CollectorRegistry()
    metrics = TaskMetrics(registry=registry)
    metrics.register_tasks(["t"])
    emitted = {family.name: family for family in registry.collect()}
    core = {n: v for n, v in METRICS.items() if n in _core_names()}
    for name, (kind, labels) in core.items():
        family_name = name.removesuffix("_total")
        assert family_name in emitted, name
        family = emitted[family_name]
        assert family.type == kind
        sample_labels = {k for s in family.samples for k in s.labels if k != "le"}
        if family.samples:
            assert sample_labels == set(labels), name


def _core_names() -> set[str]:
    return {
        "taskiq_tasks_enqueued_total",
        "taskiq_tasks_started_total",
        "taskiq_tasks_completed_total",
        "taskiq_task_errors_total",
        "taskiq_tasks_running",
        "taskiq_task_duration_seconds",
        "taskiq_task_queue_wait_seconds",
        "taskiq_monitor_errors_total",
    }


def test_every_monitor_error_component_is_declared() -> None:
    """Components are exported at zero from start-up; one used but not declared would appear only on failure."""
    from taskiq_monitor.metrics import MONITOR_COMPONENTS

    source = "\n".join(p.read_text() for p in (Path(__file__).parents[1] / "exporter").rglob("*.py"))
    used = set(re.findall(r'_count_failure\("(\w+)"\)', source)) | set(
        re.findall(r'monitor_errors\.labels\("(\w+)"\)', source)
    )
    assert used, "the pattern must find the components"
    assert used <= set(MONITOR_COMPONENTS), used - set(MONITOR_COMPONENTS)


def test_log_results_are_counted_through_their_constants() -> None:
    """``taskiq_monitor_log_records_total{result}`` values are spelled once (metrics.LOG_*), never as literals."""
    from taskiq_monitor.metrics import LOG_RESULTS

    source = "\n".join(p.read_text() for p in (Path(__file__).parents[1] / "exporter").rglob("*.py"))
    literals = re.findall(r'_count\("(\w+)"', source) + re.findall(r'by_result\["(\w+)"\]', source)
    assert literals == [], f"write metrics.LOG_* instead of {literals} ({LOG_RESULTS})"
