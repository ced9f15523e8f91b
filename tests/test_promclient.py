"""The one module that touches prometheus_client's private API: each accessor against a real registry, and a scan
that no other module of the package does."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram

from taskiq_monitor.promclient import histogram_cells, registered_collector, value_cell

PACKAGE = Path(__file__).parents[1] / "exporter" / "taskiq_monitor"
PRIVATE = re.compile(r"\._value\b|_upper_bounds|\._buckets\b|\._sum\b|_names_to_collectors")


def test_value_cell_writes_the_childs_value() -> None:
    registry = CollectorRegistry()
    counter = Counter("jobs", "jobs", ["task_name"], registry=registry)
    value_cell(counter.labels("a")).inc(3)
    assert registry.get_sample_value("jobs_total", {"task_name": "a"}) == 3


def test_histogram_cells_are_bounds_buckets_and_sum() -> None:
    registry = CollectorRegistry()
    histogram = Histogram("took", "took", ["task_name"], buckets=(0.1, 1.0), registry=registry)
    bounds, buckets, total = histogram_cells(histogram.labels("a"))
    assert bounds == [0.1, 1.0, float("inf")]
    buckets[1].inc(1)  # one observation in (0.1, 1.0]
    total.inc(0.5)
    assert registry.get_sample_value("took_bucket", {"task_name": "a", "le": "1.0"}) == 1
    assert registry.get_sample_value("took_bucket", {"task_name": "a", "le": "0.1"}) == 0
    assert registry.get_sample_value("took_sum", {"task_name": "a"}) == 0.5


def test_registered_collector_finds_a_metric_by_sample_name() -> None:
    registry = CollectorRegistry()
    counter = Counter("jobs", "jobs", registry=registry)
    assert registered_collector(registry, "jobs_total") is counter
    assert registered_collector(registry, "missing") is None


def test_no_other_module_uses_prometheus_clients_private_api() -> None:
    offenders = [
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if path.name != "promclient.py" and PRIVATE.search(path.read_text())
    ]
    assert offenders == []
