"""PromQL against the metric contract, shared by the rules and dashboard tests.

The contract is the code's: ``taskiq_monitor.metrics.METRICS`` (every family the exporter emits) and
``QUEUE_WIDE_METRICS`` (the queue-wide ones, identical from every exporter sharing a Redis). No copied lists.
"""

from __future__ import annotations

from typing import Any

import promql_parser

from taskiq_monitor.metrics import METRICS, QUEUE_WIDE_METRICS

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def sample_names() -> set[str]:
    """Every series name the exporter emits: the families of METRICS, with the histograms' suffixed series."""
    names = set()
    for name, (kind, _labels) in METRICS.items():
        names.add(name)
        if kind == "histogram":
            names.update(name + suffix for suffix in HISTOGRAM_SUFFIXES)
    return names


def family(name: str) -> str:
    """The METRICS family of a series name (``taskiq_task_duration_seconds_bucket`` -> the histogram)."""
    for suffix in HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if base != name and METRICS.get(base, ("",))[0] == "histogram":
            return base
    return name


def _children(node: Any) -> list[Any]:
    if isinstance(node, promql_parser.BinaryExpr):
        return [node.lhs, node.rhs]
    if isinstance(node, promql_parser.Call):
        return list(node.args)
    if isinstance(node, promql_parser.MatrixSelector):
        return [node.vector_selector]
    if isinstance(node, promql_parser.AggregateExpr):
        return [node.expr] + ([node.param] if node.param is not None else [])
    inner = getattr(node, "expr", None)  # ParenExpr, UnaryExpr, SubqueryExpr
    return [inner] if inner is not None else []


def selector_names(expr: str) -> set[str]:
    """Metric names of all vector selectors in a PromQL expression."""
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"selector without a metric name in {expr!r}"
            names.add(node.name)
        for child in _children(node):
            visit(child)

    visit(promql_parser.parse(expr))
    return names


def queue_wide_aggregation_problems(expr: str) -> list[str]:
    """Selectors of a queue-wide metric whose nearest enclosing aggregation is not ``max``.

    Every exporter sharing the Redis reports the same pending count, oldest age, worker count and expired count:
    ``sum`` over exporters multiplies them, and no aggregation at all shows one series per exporter.
    ``sum(max by (task_name) (taskiq_tasks_pending))`` is right: max de-duplicates, then sum adds task types.
    """
    problems: list[str] = []

    def visit(node: Any, aggregation: str | None) -> None:
        queue_wide = isinstance(node, promql_parser.VectorSelector) and family(node.name or "") in QUEUE_WIDE_METRICS
        if queue_wide and aggregation != "max":
            found = f"inside {aggregation}()" if aggregation else "without aggregation"
            problems.append(f"{node.name} {found} in {expr!r}: aggregate queue-wide values with max()")
        if isinstance(node, promql_parser.AggregateExpr):
            visit(node.expr, str(node.op))
            if node.param is not None:
                visit(node.param, aggregation)
            return
        for child in _children(node):
            visit(child, aggregation)

    visit(promql_parser.parse(expr), None)
    return problems
