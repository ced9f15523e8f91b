"""taskiq-monitor: Prometheus/Loki/Grafana/Alertmanager monitoring for TaskIQ.

Add the middleware to your broker and run workers with ``taskiq-monitor worker``::

    from taskiq_monitor import MonitoringMiddleware
    broker = ListQueueBroker(url).with_middlewares(MonitoringMiddleware())
"""

from taskiq_monitor.events import EventSink, TaskEvent
from taskiq_monitor.metrics import METRICS, TaskMetrics
from taskiq_monitor.middleware import MonitoringMiddleware
from taskiq_monitor.service.app import create_app, metrics_asgi_app
from taskiq_monitor.settings import Settings

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
