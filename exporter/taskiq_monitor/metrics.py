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

import asyncio
import contextlib
import logging
import threading
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Statuses live in events.TaskStatus; these names stay importable from here (public).
from taskiq_monitor.events import COMPLETED_STATUSES as COMPLETED_STATUSES
from taskiq_monitor.events import OTHER as OTHER
from taskiq_monitor.events import STATUS_FAILED as STATUS_FAILED
from taskiq_monitor.events import STATUS_RETRIED as STATUS_RETRIED
from taskiq_monitor.events import STATUS_SUCCESS as STATUS_SUCCESS
from taskiq_monitor.promclient import histogram_cells, registered_collector, value_cell
from taskiq_monitor.settings import DEFAULT_DURATION_BUCKETS, DEFAULT_QUEUE_WAIT_BUCKETS

logger = logging.getLogger(__name__)

# Components that count their own failures in taskiq_monitor_errors_total; exported at zero from start-up so
# that rate() and alert expressions have a series before the first failure.
MONITOR_COMPONENTS: tuple[str, ...] = (
    "middleware",
    "metrics",
    "redaction",
    "sink",
    "sink_start",
    "sink_close",
    "startup",
    "in_flight_overflow",
)


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
    "taskiq_monitor_log_records_total": ("counter", ("result",)),
    "taskiq_monitor_log_queue_records": ("gauge", ()),
    "taskiq_monitor_log_spool_bytes": ("gauge", ()),
    # Shared task state (Redis), exported by the exporter's StateCollector (service/state_collector.py): queue-wide
    # values, identical from every exporter sharing the Redis — aggregate with max(), not sum().
    "taskiq_tasks_pending": ("gauge", ("task_name",)),
    "taskiq_task_oldest_pending_age_seconds": ("gauge", ("task_name",)),
    "taskiq_workers": ("gauge", ()),
    "taskiq_tasks_pending_expired_total": ("counter", ("task_name",)),
    "taskiq_monitor_state_up": ("gauge", ()),
    "taskiq_monitor_live_clients": ("gauge", ()),
    # Execution history (service/history.py, from the store): queue-wide like the state above.
    "taskiq_monitor_history_executions": ("gauge", ()),
    "taskiq_monitor_history_evicted_total": ("counter", ("reason",)),
    # Written by every process's StateSink (sinks/state.py); result in {written, dropped}.
    "taskiq_monitor_state_events_total": ("counter", ("result",)),
    "taskiq_monitor_state_buffer_events": ("gauge", ()),
}

# The metrics of METRICS whose value is queue-wide (read from the shared state store), not this exporter's own:
# every exporter sharing the Redis reports the same value, so queries aggregate them with max(), never sum().
QUEUE_WIDE_METRICS: frozenset[str] = frozenset(
    {
        "taskiq_tasks_pending",
        "taskiq_task_oldest_pending_age_seconds",
        "taskiq_workers",
        "taskiq_tasks_pending_expired_total",
        "taskiq_monitor_history_executions",
        "taskiq_monitor_history_evicted_total",
    }
)

# Outcomes of a record on its way to Loki. A record that waited on disk counts once as spooled and, when replayed,
# once as shipped; dropped records are lost (spool full, or isolated as rejected by Loki with 400).
LOG_SHIPPED = "shipped"
LOG_SPOOLED = "spooled"
LOG_DROPPED = "dropped"
LOG_RESULTS: tuple[str, ...] = (LOG_SHIPPED, LOG_SPOOLED, LOG_DROPPED)


def _unregister_existing(registry: CollectorRegistry, names: Iterable[str]) -> None:
    # Building TaskMetrics twice on one registry (two brokers in one process, or a test re-creating the
    # middleware) must not raise "Duplicated timeseries": the newer instruments replace the older ones.
    for name in names:
        collector = registered_collector(registry, name)
        if collector is not None:
            with contextlib.suppress(KeyError):
                registry.unregister(collector)


class RawHistogram:
    """The value cells of one histogram child. ``bisect`` finds the bucket in O(log n) where prometheus_client
    scans linearly, and the cells go through :class:`TaskMetrics`' coalescing instead of one write each."""

    __slots__ = ("bounds", "buckets", "sum")

    def __init__(self, child: Histogram) -> None:
        self.bounds, self.buckets, self.sum = histogram_cells(child)


@dataclass(slots=True)
class TaskInstruments:
    """Value cells of one task name's series; looked up once, reused on every task (the hot path)."""

    label: str
    enqueued: Any
    started: Any
    running: Any
    queue_wait: RawHistogram
    completed: dict[str, Any]
    duration: dict[str, RawHistogram]
    errors: dict[str, Any] = field(default_factory=dict)


_SHARED: weakref.WeakKeyDictionary[CollectorRegistry, TaskMetrics] = weakref.WeakKeyDictionary()
_SHARED_LOCK = threading.Lock()


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
        self.duration_buckets = tuple(duration_buckets)
        self._batch = CoalescingWriter(self._write_failed)
        self._direct = DirectWriter()
        self.max_task_names = max_task_names
        self.max_error_types = max_error_types
        self._known: set[str] = set()
        self._extra_names: set[str] = set()
        self._instruments: dict[str, TaskInstruments] = {}
        self._error_types: set[str] = set()

    @classmethod
    def shared(
        cls,
        registry: CollectorRegistry | None = None,
        duration_buckets: Sequence[float] = DEFAULT_DURATION_BUCKETS,
        queue_wait_buckets: Sequence[float] = DEFAULT_QUEUE_WAIT_BUCKETS,
        max_task_names: int = 100,
        max_error_types: int = 50,
    ) -> TaskMetrics:
        """One instance per registry: two middlewares in one process (two brokers) share the metric objects
        instead of the second replacing — and hiding — the first's."""
        from prometheus_client import REGISTRY

        reg = REGISTRY if registry is None else registry
        with _SHARED_LOCK:
            existing = _SHARED.get(reg)
            if existing is not None:
                if tuple(duration_buckets) != existing.duration_buckets:
                    logger.warning("taskiq-monitor: a second middleware asked for other buckets; keeping the first")
                return existing
            created = cls(reg, duration_buckets, queue_wait_buckets, max_task_names, max_error_types)
            _SHARED[reg] = created
            return created

    def _write_failed(self) -> None:
        try:
            self.monitor_errors.labels("metrics").inc()
            logger.warning("taskiq-monitor could not write metrics; the tasks are unaffected", exc_info=True)
        except Exception:  # pragma: no cover - nothing more to do
            pass

    # -- cardinality -------------------------------------------------------------------------------------------
    def register_tasks(self, task_names: Iterable[str]) -> None:
        """Declare the broker's tasks: they are never folded, and all their series exist with zero values."""
        for component in MONITOR_COMPONENTS:
            self.monitor_errors.labels(component).inc(0)
        for name in task_names:
            self._known.add(name)
            inst = self.for_task(name)
            # A zero write creates the series (in multiprocess mode: the entry in this process's file).
            for cell in (inst.started, inst.enqueued, inst.running, *inst.completed.values()):
                cell.inc(0)

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
                enqueued=value_cell(self.enqueued.labels(label)),
                started=value_cell(self.started.labels(label)),
                running=value_cell(self.running.labels(label)),
                queue_wait=RawHistogram(self.queue_wait.labels(label)),
                completed={s: value_cell(self.completed.labels(label, s)) for s in COMPLETED_STATUSES},
                duration={s: RawHistogram(self.duration.labels(label, s)) for s in COMPLETED_STATUSES},
            )
            self._instruments[label] = inst
        if label == task_name:
            self._instruments[task_name] = inst
        return inst

    def error_cell(self, inst: TaskInstruments, error_type: str) -> Any:
        cell = inst.errors.get(error_type)
        if cell is None:
            cell = value_cell(self.errors.labels(inst.label, self.error_label(error_type)))
            inst.errors[error_type] = cell
        return cell

    # -- writes --------------------------------------------------------------------------------------------------------
    def writer(self) -> CoalescingWriter | DirectWriter:
        """The writer for this call site: coalescing on the thread that owns the batch, write-through elsewhere.

        A process may call hooks from several threads (``asyncio.run(task.kiq())`` in a threaded web app); the
        batch is a plain dict, so only its owner thread (the first to write) may use it.
        """
        if threading.get_ident() == self._batch.owner:
            return self._batch
        return self._direct

    def add(self, cell: Any, amount: float = 1.0) -> None:
        self.writer().add(cell, amount)

    def observe(self, hist: RawHistogram, amount: float) -> None:
        self.writer().observe(hist, amount)

    def commit(self) -> None:
        self.writer().commit()

    def flush(self) -> None:
        """Write the pending sums of the owner thread's batch (call from that thread, or when it is idle)."""
        self._batch.flush()


class DirectWriter:
    """Writes every increment at once (prometheus_client's values are thread-safe)."""

    __slots__ = ()

    def add(self, cell: Any, amount: float = 1.0) -> None:
        cell.inc(amount)

    def observe(self, hist: RawHistogram, amount: float) -> None:
        hist.sum.inc(amount)
        hist.buckets[bisect_left(hist.bounds, amount)].inc(1.0)

    def commit(self) -> None:
        pass


class CoalescingWriter:
    """Adds increments to a dict and writes the sums once per event-loop iteration.

    In multiprocess mode every increment is a locked write into an mmap'd file (~0.8 µs) and a task touches eight
    cells. Hooks therefore only add to a dict; the sums are written by a ``call_soon`` callback (or every
    ``FLUSH_EVERY_OPS`` hook calls when the loop never yields). Under load many tasks share one write per cell; at
    low load the write lands microseconds after the hook. Owned by one thread (see ``TaskMetrics.writer``).
    """

    FLUSH_EVERY_OPS = 256

    def __init__(self, on_error: Any) -> None:
        self.owner = threading.get_ident()
        self._on_error = on_error
        self._deltas: dict[Any, float] = {}
        self._ops = 0
        self._scheduled_on: asyncio.AbstractEventLoop | None = None

    def add(self, cell: Any, amount: float = 1.0) -> None:
        deltas = self._deltas
        deltas[cell] = deltas.get(cell, 0.0) + amount

    def observe(self, hist: RawHistogram, amount: float) -> None:
        deltas = self._deltas
        deltas[hist.sum] = deltas.get(hist.sum, 0.0) + amount
        bucket = hist.buckets[bisect_left(hist.bounds, amount)]
        deltas[bucket] = deltas.get(bucket, 0.0) + 1.0

    def commit(self) -> None:
        """End of a hook: make sure the pending sums get written soon, without writing them now."""
        self._ops += 1
        if self._ops >= self.FLUSH_EVERY_OPS:
            self.flush()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()  # no event loop (a sync caller): write through
            return
        # A loop that closed before running our callback (asyncio.run() ended) must not block rescheduling.
        if self._scheduled_on is loop:
            return
        self._scheduled_on = loop
        loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write all pending sums. Never raises: a failure is counted in taskiq_monitor_errors_total."""
        self._scheduled_on = None
        self._ops = 0
        deltas, self._deltas = self._deltas, {}
        try:
            for cell, amount in deltas.items():
                if amount:
                    cell.inc(amount)
        except Exception:
            self._on_error()


class LogShippingMetrics:
    """The Loki shipper's own metrics (``taskiq_monitor_log_*``), updated from its background threads."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import REGISTRY

        reg = REGISTRY if registry is None else registry
        names = (
            "taskiq_monitor_log_records_total",
            "taskiq_monitor_log_queue_records",
            "taskiq_monitor_log_spool_bytes",
        )
        _unregister_existing(reg, [n.removesuffix("_total") for n in names] + list(names))
        self.records = Counter(
            "taskiq_monitor_log_records",
            "Task event records on their way to Loki, by result (shipped, spooled, dropped).",
            ["result"],
            registry=reg,
        )
        self.by_result = {result: self.records.labels(result) for result in LOG_RESULTS}
        for counter in self.by_result.values():
            counter.inc(0)
        # livesum: each process reports its own queue and its own spool files; a dead process's share vanishes
        # (its spool files are adopted, and then reported, by the next process that starts).
        self.queue = Gauge(
            "taskiq_monitor_log_queue_records",
            "Records waiting in memory to be shipped to Loki.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.spool_bytes = Gauge(
            "taskiq_monitor_log_spool_bytes",
            "Bytes of this process's on-disk spool of batches Loki has not accepted yet.",
            registry=reg,
            multiprocess_mode="livesum",
        )
