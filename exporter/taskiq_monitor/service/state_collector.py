"""Queue state metrics of the exporter, read from the shared state store at each scrape."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from taskiq_monitor.logs import Outage
from taskiq_monitor.service.scrape_budget import StoreSkipped, read
from taskiq_monitor.store import StateStore

logger = logging.getLogger(__name__)


class StateCollector:
    """``taskiq_tasks_pending``, ``taskiq_task_oldest_pending_age_seconds``, ``taskiq_workers``,
    ``taskiq_tasks_pending_expired_total``, ``taskiq_monitor_state_up``, ``taskiq_monitor_live_clients``.

    Each scrape also expires pending entries older than the horizon and forgets workers without heartbeat. The read
    has the scrape's Redis deadline (``service/scrape_budget.py``): a hung Redis gives ``taskiq_monitor_state_up 0``
    in time for Prometheus to keep the rest of the scrape.
    The values are queue-wide (the same from every exporter sharing the Redis): aggregate with ``max``, not ``sum``.
    """

    def __init__(
        self, store: StateStore, clients: Callable[[], int] = lambda: 0, *, target: str = "the state store"
    ) -> None:
        self.store = store
        self.clients = clients
        # Prometheus scrapes every few seconds: an outage is logged when it begins and ends, state_up says the rest.
        self.outage = Outage(logger, "taskiq-monitor metrics", target)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("taskiq_monitor_state_up", "1 when the shared task state (Redis) could be read.")
        try:
            snap = read(self.store.snapshot_sync)
        except StoreSkipped as exc:
            # Not a failure of Redis itself: the earlier failure or the slow read was reported where it happened.
            log = logger.debug if self.outage.down else logger.warning
            log("taskiq-monitor metrics: the task state not read (%s)", exc)
            up.add_metric([], 0)
            yield up
            return
        except Exception as exc:
            self.outage.failed(exc)
            up.add_metric([], 0)
            yield up
            return
        self.outage.recovered()
        up.add_metric([], 1)
        yield up
        pending = GaugeMetricFamily(
            "taskiq_tasks_pending",
            "Tasks sent and not yet started, per task type (all processes).",
            labels=["task_name"],
        )
        oldest = GaugeMetricFamily(
            "taskiq_task_oldest_pending_age_seconds",
            "Age of the oldest pending task, per task type (0 when none is pending).",
            labels=["task_name"],
        )
        expired = CounterMetricFamily(
            "taskiq_tasks_pending_expired",
            "Pending entries dropped after the pending horizon (lost messages), per task type.",
            labels=["task_name"],
        )
        for name in sorted(snap.tasks):
            task = snap.tasks[name]
            pending.add_metric([name], task.pending)
            age = max(0.0, snap.taken_at - task.oldest_pending_at) if task.oldest_pending_at is not None else 0.0
            oldest.add_metric([name], age)
            expired.add_metric([name], task.expired)
        yield pending
        yield oldest
        yield expired
        yield GaugeMetricFamily("taskiq_workers", "Live worker processes (by heartbeat).", value=snap.workers)
        yield GaugeMetricFamily(
            "taskiq_monitor_live_clients", "WebSocket clients of this exporter's live feed.", value=self.clients()
        )
