"""The Prometheus metrics contract of taskiq-monitor.

Names and labels here are a public API: dashboards, alert rules and users' queries depend on them, and the
README's metrics table and ``tests/test_contract.py`` pin them. Example::

    registry = CollectorRegistry()
    metrics = TaskMetrics(registry=registry)
    metrics.for_task("score_message_task").started.inc()
    registry.get_sample_value("taskiq_tasks_started_total", {"task_name": "score_message_task"})  # 1.0

In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before prometheus_client is imported) every value is
written to a per-process mmap file and the registry passed here is irrelevant for exposition; the exporter merges
the files of all processes (see ``multiproc.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from taskiq_monitor.settings import DEFAULT_DURATION_BUCKETS, DEFAULT_QUEUE_WAIT_BUCKETS

# Statuses of a finished attempt. ``retried``: the attempt failed and a retry was scheduled; ``failed``: final.
STATUS_SUCCESS = "success"
STATUS_FAILED = "failed"
STATUS_RETRIED = "retried"
COMPLETED_STATUSES: tuple[str, ...] = (STATUS_SUCCESS, STATUS_FAILED, STATUS_RETRIED)

# The label value that unbounded label sets fold into, so a bug that invents task names cannot explode series.
OTHER = "other"

# name -> (type, labels); the single source for the README table, the contract test, and the rules/dashboards
# tests that prove they only use what the code emits.
METRICS: dict[str, tuple[str, tuple[str, ...]]] = {
    "taskiq_tasks_enqueued_total": ("counter", ("task_name",)),
    "taskiq_tasks_started_total": ("counter", ("task_name",)),
    "taskiq_tasks_completed_total": ("counter", ("task_name", "status")),
    "taskiq_task_errors_total": ("counter", ("task_name", "error_type")),
    "taskiq_tasks_running": ("gauge", ("task_name",)),
    "taskiq_task_duration_seconds": ("histogram", ("task_name", "status")),
    "taskiq_task_queue_wait_seconds": ("histogram", ("task_name",)),
    "taskiq_monitor_errors_total": ("counter", ("component",)),
    # Shared task state (Redis), exported by the exporter's StateCollector (service/live.py): queue-wide values,
    # identical from every exporter sharing the Redis — aggregate with max(), not sum().
    "taskiq_tasks_pending": ("gauge", ("task_name",)),
    "taskiq_task_oldest_pending_age_seconds": ("gauge", ("task_name",)),
    "taskiq_workers": ("gauge", ()),
    "taskiq_tasks_pending_expired_total": ("counter", ("task_name",)),
    "taskiq_monitor_state_up": ("gauge", ()),
    "taskiq_monitor_live_clients": ("gauge", ()),
    # Written by every process's StateSink (sinks/state.py); result in {written, dropped}.
    "taskiq_monitor_state_events_total": ("counter", ("result",)),
}


def _unregister_existing(registry: CollectorRegistry, names: Iterable[str]) -> None:
    # Building TaskMetrics twice on one registry (two brokers in one process, or a test re-creating the
    # middleware) must not raise "Duplicated timeseries": the newer instruments replace the older ones.
    collectors = getattr(registry, "_names_to_collectors", {})
    for name in names:
        collector = collectors.get(name)
        if collector is not None:
            with contextlib.suppress(KeyError):
                registry.unregister(collector)


@dataclass(slots=True)
class TaskInstruments:
    """Pre-bound label children of one task name; looked up once, reused on every task (the hot path)."""

    label: str
    enqueued: Counter
    started: Counter
    running: Gauge
    queue_wait: Histogram
    completed: dict[str, Counter]
    duration: dict[str, Histogram]
    errors: dict[str, Counter] = field(default_factory=dict)


class TaskMetrics:
    """Owns the metric objects and bounds their label cardinality."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        duration_buckets: Sequence[float] = DEFAULT_DURATION_BUCKETS,
        queue_wait_buckets: Sequence[float] = DEFAULT_QUEUE_WAIT_BUCKETS,
        max_task_names: int = 100,
        max_error_types: int = 50,
    ) -> None:
        from prometheus_client import REGISTRY

        reg = REGISTRY if registry is None else registry
        _unregister_existing(
            reg,
            [n.removesuffix("_total") for n in METRICS] + list(METRICS),
        )
        self.enqueued = Counter(
            "taskiq_tasks_enqueued",
            "Tasks sent to the broker (.kiq(), retries included).",
            ["task_name"],
            registry=reg,
        )
        self.started = Counter("taskiq_tasks_started", "Task executions started.", ["task_name"], registry=reg)
        self.completed = Counter(
            "taskiq_tasks_completed",
            "Task executions finished, by status (success, failed, retried).",
            ["task_name", "status"],
            registry=reg,
        )
        self.errors = Counter(
            "taskiq_task_errors",
            "Exceptions raised by tasks, by exception class name.",
            ["task_name", "error_type"],
            registry=reg,
        )
        # livesum: the exporter drops a dead process's value once it is marked dead, so a killed worker's
        # in-flight tasks do not stay "running" forever.
        self.running = Gauge(
            "taskiq_tasks_running",
            "Task executions in progress.",
            ["task_name"],
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.duration = Histogram(
            "taskiq_task_duration_seconds",
            "Task execution time (perf_counter), by final status of the attempt.",
            ["task_name", "status"],
            buckets=tuple(duration_buckets),
            registry=reg,
        )
        self.queue_wait = Histogram(
            "taskiq_task_queue_wait_seconds",
            "Time between .kiq() and the start of execution.",
            ["task_name"],
            buckets=tuple(queue_wait_buckets),
            registry=reg,
        )
        self.monitor_errors = Counter(
            "taskiq_monitor_errors",
            "Failures inside taskiq-monitor itself (never the task's), by component.",
            ["component"],
            registry=reg,
        )
        self.max_task_names = max_task_names
        self.max_error_types = max_error_types
        self._known: set[str] = set()
        self._extra_names: set[str] = set()
        self._instruments: dict[str, TaskInstruments] = {}
        self._error_types: set[str] = set()

    # -- cardinality -------------------------------------------------------------------------------------------
    def register_tasks(self, task_names: Iterable[str]) -> None:
        """Declare the broker's tasks: they are never folded, and all their series exist with zero values."""
        for name in task_names:
            self._known.add(name)
            inst = self.for_task(name)
            for status in COMPLETED_STATUSES:
                inst.completed[status].inc(0)
            inst.started.inc(0)
            inst.enqueued.inc(0)
            inst.running.inc(0)

    def task_label(self, task_name: str) -> str:
        if task_name in self._known or task_name in self._extra_names:
            return task_name
        if len(self._extra_names) < self.max_task_names:
            self._extra_names.add(task_name)
            return task_name
        return OTHER

    def error_label(self, error_type: str) -> str:
        if error_type in self._error_types:
            return error_type
        if len(self._error_types) < self.max_error_types:
            self._error_types.add(error_type)
            return error_type
        return OTHER

    # -- instruments ---------------------------------------------------------------------------------------------
    def for_task(self, task_name: str) -> TaskInstruments:
        inst = self._instruments.get(task_name)
        if inst is not None:
            return inst
        label = self.task_label(task_name)
        inst = self._instruments.get(label)
        if inst is None:
            inst = TaskInstruments(
                label=label,
                enqueued=self.enqueued.labels(label),
                started=self.started.labels(label),
                running=self.running.labels(label),
                queue_wait=self.queue_wait.labels(label),
                completed={s: self.completed.labels(label, s) for s in COMPLETED_STATUSES},
                duration={s: self.duration.labels(label, s) for s in COMPLETED_STATUSES},
            )
            self._instruments[label] = inst
        if label == task_name:
            self._instruments[task_name] = inst
        return inst

    def error_counter(self, inst: TaskInstruments, error_type: str) -> Counter:
        counter = inst.errors.get(error_type)
        if counter is None:
            counter = self.errors.labels(inst.label, self.error_label(error_type))
            inst.errors[error_type] = counter
        return counter
