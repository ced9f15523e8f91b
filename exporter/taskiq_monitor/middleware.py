"""``MonitoringMiddleware``: Prometheus metrics and task events for every TaskIQ task.

Usage::

    from taskiq_redis import ListQueueBroker
    from taskiq_monitor import MonitoringMiddleware

    broker = ListQueueBroker("redis://localhost:6379").with_middlewares(MonitoringMiddleware())

then run the workers with ``taskiq-monitor worker app.tasks:broker --workers 4`` so that one endpoint serves the
metrics of all worker processes (see ``cli.py``).

Where each hook runs (taskiq 0.13): ``pre_send`` where ``.kiq()`` is called (web app, scheduler, or a worker when a
task or a retry middleware re-kicks); ``pre_execute``/``on_error``/``post_execute`` in the worker process.

Two rules hold for every hook:

* It never changes the task's outcome. taskiq wraps no hook in try/except — a raising hook would skip the result
  and the ack — so each hook guards itself and counts its own failures in
  ``taskiq_monitor_errors_total{component="middleware"}``.
* It never blocks the event loop: hooks are synchronous, touch only in-memory (mmap) metric values and hand events
  to sinks that merely enqueue.

Retries are recognised whatever the middleware order: an attempt is ``retried`` when a retry middleware re-sent the
same task id while the attempt ran (seen by our own ``pre_send``), or replaced its error by ``NoResultError``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry
from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq.exceptions import NoResultError

from taskiq_monitor.events import STATUS_PENDING, STATUS_RUNNING, EventSink, TaskEvent
from taskiq_monitor.metrics import STATUS_FAILED, STATUS_RETRIED, STATUS_SUCCESS, TaskMetrics
from taskiq_monitor.settings import Settings

logger = logging.getLogger("taskiq_monitor")

# Label stamped in pre_send; travels with the message as a raw JSON float (verified with taskiq-redis 1.2.4).
ENQUEUED_AT_LABEL = "enqueued_at"
RETRIES_LABEL = "_retries"  # set by taskiq's retry middlewares: 1, 2, … on re-kicks


@dataclass(slots=True)
class _InFlight:
    started_perf: float
    started_at: float
    enqueued_at: float | None
    queue_wait: float | None
    error: BaseException | None = None
    resent: bool = False


def _attempt(labels: dict[str, Any]) -> int:
    try:
        return int(labels.get(RETRIES_LABEL, 0) or 0) + 1
    except (TypeError, ValueError):
        return 1


def _as_float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class MonitoringMiddleware(TaskiqMiddleware):
    """Records metrics and emits task events; see the module docstring."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        registry: CollectorRegistry | None = None,
        sinks: Iterable[EventSink] | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings if settings is not None else Settings()
        self.metrics = TaskMetrics(
            registry=registry,
            duration_buckets=self.settings.duration_buckets,
            queue_wait_buckets=self.settings.queue_wait_buckets,
            max_task_names=self.settings.max_task_names,
            max_error_types=self.settings.max_error_types,
        )
        if sinks is None:
            from taskiq_monitor.sinks import default_sinks

            sinks = default_sinks(self.settings)
        self.sinks: list[EventSink] = list(sinks)
        # Keyed by (task id, attempt): a retry of the same id may start before the failed attempt's post_execute
        # (in-place brokers run it inside on_error), and each attempt must find its own record.
        self._in_flight: dict[tuple[str, int], _InFlight] = {}
        self._host = socket.gethostname()
        self._warned: set[str] = set()

    # -- guards ----------------------------------------------------------------------------------------------------
    def _failed(self, component: str) -> None:
        """Count (and log once per component) a failure of monitoring itself; never propagate it."""
        try:
            self.metrics.monitor_errors.labels(component).inc()
            if component not in self._warned:
                self._warned.add(component)
                logger.warning("taskiq-monitor %s failed; the task is unaffected", component, exc_info=True)
            else:
                logger.debug("taskiq-monitor %s failed", component, exc_info=True)
        except Exception:  # pragma: no cover - the last line of defence must not raise either
            pass

    # -- lifecycle ---------------------------------------------------------------------------------------------------
    async def startup(self) -> None:
        try:
            self.metrics.register_tasks(self.broker.get_all_tasks())
        except Exception:
            self._failed("startup")
        for sink in self.sinks:
            try:
                # Optional hook: a sink that needs the broker (worker or not, task names) gets it before start().
                attach = getattr(sink, "attach_broker", None)
                if attach is not None:
                    attach(self.broker)
                await sink.start()
            except Exception:
                self._failed("sink_start")

    async def shutdown(self) -> None:
        for sink in self.sinks:
            try:
                await sink.close()
            except Exception:
                self._failed("sink_close")

    # -- hooks ---------------------------------------------------------------------------------------------------------
    def pre_send(self, message: TaskiqMessage) -> TaskiqMessage:
        try:
            now = time.time()
            message.labels[ENQUEUED_AT_LABEL] = now
            self.metrics.for_task(message.task_name).enqueued.inc()
            attempt = _attempt(message.labels)
            if attempt > 1:
                in_flight = self._in_flight.get((message.task_id, attempt - 1))
                if in_flight is not None:
                    # The same task id re-sent while its previous attempt runs here: a retry middleware re-kicked it.
                    in_flight.resent = True
            if self.sinks:
                self._emit(
                    TaskEvent(
                        status=STATUS_PENDING,
                        task_id=message.task_id,
                        task_name=message.task_name,
                        timestamp=now,
                        attempt=attempt,
                        enqueued_at=now,
                        args=message.args,
                        kwargs=message.kwargs,
                        labels=message.labels,
                    )
                )
        except Exception:
            self._failed("middleware")
        return message

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        try:
            perf = time.perf_counter()
            now = time.time()
            enqueued_at = _as_float(message.labels.get(ENQUEUED_AT_LABEL))
            # Wall clocks of the sending and executing hosts may differ slightly; never report negative waits.
            wait = max(0.0, now - enqueued_at) if enqueued_at is not None else None
            inst = self.metrics.for_task(message.task_name)
            inst.started.inc()
            inst.running.inc()
            if wait is not None:
                inst.queue_wait.observe(wait)
            attempt = _attempt(message.labels)
            self._in_flight[(message.task_id, attempt)] = _InFlight(perf, now, enqueued_at, wait)
            if self.sinks:
                self._emit(
                    TaskEvent(
                        status=STATUS_RUNNING,
                        task_id=message.task_id,
                        task_name=message.task_name,
                        timestamp=now,
                        attempt=attempt,
                        enqueued_at=enqueued_at,
                        started_at=now,
                        queue_wait_seconds=wait,
                        args=message.args,
                        kwargs=message.kwargs,
                        labels=message.labels,
                    )
                )
        except Exception:
            self._failed("middleware")
        return message

    def on_error(self, message: TaskiqMessage, result: TaskiqResult[Any], exception: BaseException) -> None:
        try:
            in_flight = self._in_flight.get((message.task_id, _attempt(message.labels)))
            if in_flight is not None:
                in_flight.error = exception
        except Exception:
            self._failed("middleware")

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        try:
            perf = time.perf_counter()
            in_flight = self._in_flight.pop((message.task_id, _attempt(message.labels)), None)
            inst = self.metrics.for_task(message.task_name)
            error = in_flight.error if in_flight is not None else result.error
            if not result.is_err:
                status = STATUS_SUCCESS
            elif (in_flight is not None and in_flight.resent) or (
                isinstance(result.error, NoResultError) and not isinstance(error, NoResultError)
            ):
                status = STATUS_RETRIED
            elif isinstance(error, NoResultError):
                # The task itself raised NoResultError: "done, store nothing" — not a failure.
                status = STATUS_SUCCESS
                error = None
            else:
                status = STATUS_FAILED
            if in_flight is not None:
                duration = perf - in_flight.started_perf
                inst.running.dec()
            else:
                duration = float(result.execution_time)
            inst.completed[status].inc()
            inst.duration[status].observe(duration)
            if error is not None and status != STATUS_SUCCESS:
                self.metrics.error_counter(inst, type(error).__name__).inc()
            if self.sinks:
                self._emit_finished(message, status, duration, in_flight, error)
        except Exception:
            self._failed("middleware")

    # -- events ----------------------------------------------------------------------------------------------------
    def _emit_finished(
        self,
        message: TaskiqMessage,
        status: str,
        duration: float,
        in_flight: _InFlight | None,
        error: BaseException | None,
    ) -> None:
        import traceback as tb

        event = TaskEvent(
            status=status,
            task_id=message.task_id,
            task_name=message.task_name,
            timestamp=time.time(),
            attempt=_attempt(message.labels),
            duration_seconds=duration,
            args=message.args,
            kwargs=message.kwargs,
            labels=message.labels,
        )
        event.finished_at = event.timestamp
        if in_flight is not None:
            event.enqueued_at = in_flight.enqueued_at
            event.started_at = in_flight.started_at
            event.queue_wait_seconds = in_flight.queue_wait
        if error is not None and status != STATUS_SUCCESS:
            event.error_type = type(error).__name__
            event.error_message = str(error)
            event.traceback = "".join(tb.format_exception(error))
        self._emit(event)

    def _emit(self, event: TaskEvent) -> None:
        event.host = self._host
        event.pid = os.getpid()
        for sink in self.sinks:
            try:
                sink.emit(event)
            except Exception:
                self._failed("sink")
