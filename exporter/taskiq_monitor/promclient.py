"""Every use of prometheus_client's private API, in this one module, so that an upgrade breaks here only.

The hot path writes metric values directly (``TaskMetrics`` coalesces increments per event-loop iteration and
finds histogram buckets by ``bisect``), which needs a child's value cell and a histogram's bounds, bucket cells and
sum cell; re-creating a metric on a registry needs the registry's name index. Read against prometheus_client 0.26
(``metrics.py``: ``Counter._value``, ``Gauge._value``, ``Histogram._upper_bounds``/``_buckets``/``_sum``;
``registry.py``: ``CollectorRegistry._names_to_collectors``). ``tests/test_promclient.py`` exercises each accessor.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry


def registered_collector(registry: CollectorRegistry, name: str) -> Any:
    """The collector registered under the sample name ``name`` (e.g. ``foo_total``), or None."""
    return getattr(registry, "_names_to_collectors", {}).get(name)


def value_cell(child: Any) -> Any:
    """The value cell (``inc``/``set``/``get``) of a Counter's or Gauge's labelled child."""
    return child._value


def histogram_cells(child: Any) -> tuple[list[float], list[Any], Any]:
    """``(upper bounds, bucket value cells, sum value cell)`` of a Histogram's labelled child (non-cumulative
    buckets: an observation increments exactly one)."""
    return list(child._upper_bounds), list(child._buckets), child._sum
