"""taskiq-monitor: Prometheus/Loki/Grafana/Alertmanager monitoring for TaskIQ.

Add the middleware to your broker and run workers with ``taskiq-monitor worker``::

    from taskiq_monitor import MonitoringMiddleware
    broker = ListQueueBroker(url).with_middlewares(MonitoringMiddleware())

Public names are imported lazily: importing ``taskiq_monitor.cli`` must not import prometheus_client, whose value
class is fixed at first import and must see ``PROMETHEUS_MULTIPROC_DIR`` first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taskiq_monitor.events import EventSink, TaskEvent
    from taskiq_monitor.metrics import METRICS, TaskMetrics
    from taskiq_monitor.middleware import MonitoringMiddleware
    from taskiq_monitor.service.app import create_app, metrics_asgi_app
    from taskiq_monitor.settings import Settings

_EXPORTS = {
    "EventSink": "taskiq_monitor.events",
    "TaskEvent": "taskiq_monitor.events",
    "METRICS": "taskiq_monitor.metrics",
    "TaskMetrics": "taskiq_monitor.metrics",
    "MonitoringMiddleware": "taskiq_monitor.middleware",
    "create_app": "taskiq_monitor.service.app",
    "metrics_asgi_app": "taskiq_monitor.service.app",
    "Settings": "taskiq_monitor.settings",
}

__all__ = [
    "METRICS",
    "EventSink",
    "MonitoringMiddleware",
    "Settings",
    "TaskEvent",
    "TaskMetrics",
    "create_app",
    "metrics_asgi_app",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'taskiq_monitor' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
