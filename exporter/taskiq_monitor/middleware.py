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

import asyncio
import inspect
import logging
import os
import socket
import time
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry
from taskiq import SimpleRetryMiddleware, SmartRetryMiddleware, TaskiqMessage, TaskiqMiddleware, TaskiqResult
from taskiq.exceptions import NoResultError

from taskiq_monitor.events import (
    EventContext,
    EventSink,
    FinishedAttempt,
    StartedAttempt,
    TaskEvent,
    TaskStatus,
    bounded_task_id,
    refuse,
)
from taskiq_monitor.exemplars import DurationExemplars
from taskiq_monitor.logs import WarnOnce
from taskiq_monitor.metrics import TaskMetrics
from taskiq_monitor.redaction import Redactor, error_texts
from taskiq_monitor.settings import Settings
from taskiq_monitor.tracing import current_ids

logger = logging.getLogger(__name__)

# Label stamped in pre_send; travels with the message as a raw JSON float (verified with taskiq-redis 1.2.4). In our
# own namespace: a user's ``.with_labels(enqueued_at=…)`` is theirs, and is never read or written here.
ENQUEUED_AT_LABEL = "taskiq_monitor_enqueued_at"
# The name earlier builds stamped. Still read, for messages queued before an upgrade, but only when it is the
# float our ``pre_send`` wrote: taskiq records a type in ``labels_types`` for every label set through a kicker
# (``.with_labels``), never for one a middleware adds in ``pre_send`` — so a typed ``enqueued_at`` is the user's.
LEGACY_ENQUEUED_AT_LABEL = "enqueued_at"
RETRIES_LABEL = "_retries"  # set by taskiq's retry middlewares: 1, 2, … on re-kicks
MAX_RETRIES_LABEL = "max_retries"  # read by taskiq's retry middlewares (default: their default_retry_count)


# Attempts tracked at once per process. taskiq runs at most --max-async-tasks (default 100) per worker; records
# beyond this bound can only be leaks (an attempt whose post_execute never came), evicted oldest first.
MAX_IN_FLIGHT = 10_000


# This process's id, for every event: os.getpid() is a system call (~130 ns here), once per attempt before.
_pid = os.getpid()


def _refresh_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


# The args placeholder of a finished event whose parameters are its running event's: replaced when the event is
# settled (TaskEvent.defer_redaction), before any reader sees it, and never mutated. Shared, because every queued
# event's own empty list was one more object for the cyclic GC to track and promote.
_FROM_RUNNING: list[Any] = []


class _InFlight(StartedAttempt):
    """An attempt this process runs: what post_execute needs, and the handle deferred sinks build its events from."""

    __slots__ = ("error", "key", "resent", "running", "started_perf")

    def __init__(
        self,
        key: int,
        task_id: str,
        task_name: str,
        attempt: int,
        started_perf: float,
        started_at: float,
        enqueued_at: float | None,
        queue_wait: float | None,
    ) -> None:
        super().__init__(task_id, task_name, attempt, started_at, enqueued_at, queue_wait)
        self.key = key
        self.started_perf = started_perf
        self.error: BaseException | None = None
        self.resent = False
        # The ``running`` event built on the loop (sinks that are not deferred): the finished event carries its
        # parameters (redacted once, shared).
        self.running: TaskEvent | None = None


def _attempt(labels: dict[str, Any]) -> int:
    try:
        return int(labels.get(RETRIES_LABEL, 0) or 0) + 1
    except (TypeError, ValueError):
        return 1


def _enqueued_at(message: TaskiqMessage) -> float | None:
    """The enqueue time stamped by ``pre_send`` (ours, or the legacy label of a message queued before an upgrade)."""
    labels = message.labels
    value = labels.get(ENQUEUED_AT_LABEL)
    if value is None:
        value = labels.get(LEGACY_ENQUEUED_AT_LABEL)
        if type(value) is not float or LEGACY_ENQUEUED_AT_LABEL in (message.labels_types or ()):
            return None
        return value
    if type(value) is float:  # the fast path: the float pre_send stamped
        return value
    return _as_float(value)


def _as_float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _attempt_labels(message: TaskiqMessage, in_flight: _InFlight | None) -> dict[str, Any]:
    """The labels of the attempt that finishes, as they were when it started (copied in ``pre_execute``).

    Not the message's labels now: by ``post_execute`` a retry middleware has bumped ``_retries`` (and
    SmartRetryMiddleware set ``delay``) for the *next* attempt, and attempt N's final record carried N. One dict copy
    less per task on the loop, too. The message's own, copied, only for an attempt this process did not see start
    (its ``pre_execute`` failed, or it ran before the sinks became active).
    """
    labels: dict[str, Any] | None = getattr(in_flight, "labels", None)  # a slot, unset without pre_execute's copy
    return labels if labels is not None else dict(message.labels)


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
        self.metrics = TaskMetrics.shared(
            registry=registry,
            duration_buckets=self.settings.duration_buckets,
            queue_wait_buckets=self.settings.queue_wait_buckets,
            max_task_names=self.settings.max_task_names,
            max_error_types=self.settings.max_error_types,
        )
        if sinks is None:
            from taskiq_monitor.sinks import default_sinks

            sinks = default_sinks(self.settings)
        # A sink that does not subclass EventSink (duck-typed, as the Protocol of earlier versions allowed) is
        # wrapped once here, so every hook can call the whole interface without probing.
        self.sinks: list[EventSink] = [s if isinstance(s, EventSink) else _DuckSink(s) for s in sinks]
        # Sinks that want events now. A sink may be dormant (the state sink without Redis in a process whose store
        # nobody reads): then no event is built or redacted at all — that is most of the cost of an event.
        self._emitting: list[EventSink] = self._active(self.sinks)
        # When every sink that wants events builds them in its own thread, the hooks hand over handles only.
        self._deferred = self._all_deferred(self._emitting)
        # Applied once per event, before any sink reads it: every sink gets the same redacted, size-capped record.
        # The walk is deferred to the first reader (a sink's thread; TaskEvent.defer_redaction).
        self.redactor = Redactor(
            self.settings.redact_keys,
            max_field_bytes=self.settings.event_max_field_bytes,
            max_record_bytes=self.settings.event_max_record_bytes,
        )
        self._positional: dict[str, tuple[str, ...]] = {}
        self._on_redaction_error = self._redaction_failed  # bound once: one object less held by every event
        self._context = EventContext(
            self.redactor, self._positional_names, self._on_redaction_error, self.settings.events_coalesce
        )
        # trace_id/span_id exemplars on the duration histogram (tracing.py, exemplars.py)
        self._exemplars = DurationExemplars()
        # Keyed by the message object's id: the receiver hands the same object to on_error and post_execute.
        # Neither the task id (a retry reuses it, and in-place brokers run the retry inside on_error) nor the
        # ``_retries`` label (retry middlewares mutate the running message's labels dict) identifies an attempt.
        self._in_flight: dict[int, _InFlight] = {}
        self._host = socket.gethostname()
        self._warn = WarnOnce(logger)

    @staticmethod
    def _active(sinks: list[EventSink]) -> list[EventSink]:
        return [sink for sink in sinks if sink.active]

    @staticmethod
    def _all_deferred(sinks: list[EventSink]) -> bool:
        return bool(sinks) and all(sink.deferred for sink in sinks)

    # -- guards ----------------------------------------------------------------------------------------------------
    def _count_failure(self, component: str) -> None:
        """Count (and log once per component) a failure of monitoring itself; never propagate it."""
        try:
            self.metrics.monitor_errors.labels(component).inc()
            self._warn(component, "taskiq-monitor %s failed; the task is unaffected", component, exc_info=True)
        except Exception:  # pragma: no cover - the last line of defence must not raise either
            pass

    def _redaction_failed(self) -> None:
        # Called from whichever thread read the event first; the event then carries no parameters or error text.
        self._count_failure("redaction")

    # -- lifecycle ---------------------------------------------------------------------------------------------------
    async def startup(self) -> None:
        try:
            self.metrics.register_tasks(self.broker.get_all_tasks())
        except Exception:
            self._count_failure("startup")
        for sink in self.sinks:
            try:
                # A sink that needs the broker (worker or not, task names) gets it before start().
                sink.attach_broker(self.broker)
                await sink.start()
            except Exception:
                self._count_failure("sink_start")
        self._emitting = self._active(self.sinks)
        self._deferred = self._all_deferred(self._emitting)

    def flush(self) -> None:
        """Write pending metric increments now (they are otherwise written once per event-loop iteration)."""
        self.metrics.flush()

    async def shutdown(self) -> None:
        self.metrics.flush()
        # All at once, each within its own bound (state store 5 s, Loki LOKI_FLUSH_TIMEOUT_SECONDS + 0.5 s): taskiq
        # gives the whole shutdown --shutdown-timeout (5 s), then the worker process exits without atexit hooks. One
        # after the other, a state store whose Redis hung took all of it, and the Loki sink, never closed, lost the
        # records it held, uncounted.
        await asyncio.gather(*(self._close(sink) for sink in self.sinks))

    async def _close(self, sink: EventSink) -> None:
        try:
            await sink.close()
        except Exception:
            self._count_failure("sink_close")

    # -- hooks ---------------------------------------------------------------------------------------------------------
    def pre_send(self, message: TaskiqMessage) -> TaskiqMessage:
        try:
            message.labels[ENQUEUED_AT_LABEL] = time.time()  # a user's own ``enqueued_at`` label is left alone
            attempt = _attempt(message.labels)
            if attempt > 1:
                # The same task id re-sent while an earlier attempt runs here: a retry middleware re-kicked it.
                task_id = bounded_task_id(message.task_id)
                for running in self._in_flight.values():  # a retry is rare; in flight ≤ --max-async-tasks
                    if running.task_id == task_id and running.attempt < attempt:
                        running.resent = True
        except Exception:
            self._count_failure("middleware")
        return message

    def post_send(self, message: TaskiqMessage) -> None:
        # Counted, and announced as ``pending``, only once the broker accepted the message: a send that fails
        # (unserializable arguments, broker down) raises SendTaskError in the caller, and neither the counter nor
        # the shared state may then show a task that will never run. A fast worker may report ``running`` before
        # this ``pending`` arrives; the state store remembers started attempts and ignores such a late ``pending``.
        try:
            m = self.metrics
            w = m.writer()
            w.add(m.for_task(message.task_name).enqueued)
            w.commit()
            if self._emitting:
                enqueued_at = _enqueued_at(message)
                self._emit(
                    TaskEvent(
                        TaskStatus.PENDING,
                        message.task_id,  # bounded by TaskEvent
                        message.task_name,
                        enqueued_at if enqueued_at is not None else time.time(),
                        _attempt(message.labels),
                        enqueued_at=enqueued_at,
                        # Shallow copies: the message's containers may change after this hook (a retry middleware
                        # bumps labels); their contents are copied by the deferred redaction.
                        args=list(message.args),
                        kwargs=dict(message.kwargs),
                        labels=dict(message.labels),
                    )
                )
        except Exception:
            self._count_failure("middleware")

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        try:
            perf = time.perf_counter()
            now = time.time()
            labels = message.labels
            enqueued_at = _enqueued_at(message)
            # Wall clocks of the sending and executing hosts may differ slightly; never report negative waits.
            wait = max(0.0, now - enqueued_at) if enqueued_at is not None else None
            m = self.metrics
            w = m.writer()
            inst = m.for_task(message.task_name)
            w.add(inst.started)
            w.add(inst.running)
            if wait is not None:
                w.observe(inst.queue_wait, wait)
            w.commit()
            attempt = 1 if RETRIES_LABEL not in labels else _attempt(labels)
            record = _InFlight(
                id(message), bounded_task_id(message.task_id), message.task_name, attempt, perf, now, enqueued_at, wait
            )
            if len(self._in_flight) >= MAX_IN_FLIGHT:
                self._evict_oldest()
            self._in_flight[record.key] = record
            if self._deferred:
                # Shallow copies: the message's containers may change after this hook (a retry middleware bumps
                # labels); the event, its redaction and its JSON are built by the sinks' threads. The labels copy
                # is the attempt's, for its final event too (see _finish_deferred).
                trace_id, span_id = current_ids()
                record.defer(
                    self._context,
                    self._host,
                    _pid,
                    list(message.args),
                    dict(message.kwargs),
                    dict(labels),
                    trace_id,
                    span_id,
                )
                self._hand_over(record)
            elif self._emitting:
                record.labels = dict(labels)  # the attempt's, for its final event too (see _emit_finished)
                running = TaskEvent(
                    TaskStatus.RUNNING,
                    record.task_id,
                    message.task_name,
                    now,
                    attempt,
                    enqueued_at=enqueued_at,
                    started_at=now,
                    queue_wait_seconds=wait,
                    args=list(message.args),
                    kwargs=dict(message.kwargs),
                    labels=record.labels,
                )
                self._emit(running)
                record.running = running
        except Exception:
            self._count_failure("middleware")
        return message

    def _find(self, message: TaskiqMessage) -> _InFlight | None:
        record = self._in_flight.get(id(message))
        task_id = bounded_task_id(message.task_id)
        if record is not None and record.task_id == task_id:
            return record
        # A middleware after ours returned another message object from pre_execute (e.g. a copy): match by task
        # id instead, the latest attempt first (an in-place retry finishes before the attempt that kicked it).
        # O(in flight), on this rare path only.
        candidates = [r for r in self._in_flight.values() if r.task_id == task_id]
        return max(candidates, key=lambda r: r.attempt) if candidates else None

    def _forget(self, record: _InFlight) -> None:
        self._in_flight.pop(record.key, None)

    def _evict_oldest(self) -> None:
        oldest = next(iter(self._in_flight.values()))
        self._forget(oldest)
        self.metrics.writer().add(self.metrics.for_task(oldest.task_name).running, -1.0)
        self._count_failure("in_flight_overflow")

    def on_error(self, message: TaskiqMessage, result: TaskiqResult[Any], exception: BaseException) -> None:
        try:
            in_flight = self._find(message)
            if in_flight is not None:
                in_flight.error = exception
        except Exception:
            self._count_failure("middleware")

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        try:
            perf = time.perf_counter()
            in_flight = self._find(message)
            running_event: TaskEvent | None
            if in_flight is not None:
                self._forget(in_flight)
                # The handle may stay queued for the sinks a while: it must not keep the exception (its traceback
                # holds the failed frames' locals) or an eager event alive.
                in_flight_error, running_event = in_flight.error, in_flight.running
                in_flight.error = in_flight.running = None
            else:
                in_flight_error, running_event = None, None
            m = self.metrics
            w = m.writer()
            inst = m.for_task(message.task_name)
            error = in_flight_error if in_flight is not None else result.error
            if not result.is_err:
                status = TaskStatus.SUCCESS
            elif (
                in_flight is not None and (in_flight.resent or self._retry_scheduled(message, in_flight.attempt))
            ) or (isinstance(result.error, NoResultError) and not isinstance(error, NoResultError)):
                status = TaskStatus.RETRIED
            elif isinstance(error, NoResultError):
                # The task itself raised NoResultError: "done, store nothing" — not a failure.
                status = TaskStatus.SUCCESS
                error = None
            else:
                status = TaskStatus.FAILED
            if in_flight is not None:
                duration = perf - in_flight.started_perf
                w.add(inst.running, -1.0)
            else:
                duration = float(result.execution_time)
            w.add(inst.completed[status])
            ids = current_ids()  # the exemplar's, and the finished event's
            self._exemplars.observe(w, inst.duration[status], inst.label, status, duration, ids)
            if error is not None and status != TaskStatus.SUCCESS:
                w.add(m.error_cell(inst, type(error).__name__))
            w.commit()
            if self._emitting:
                if in_flight is not None and in_flight._context is not None and self._deferred:
                    self._finish_deferred(message, status, duration, in_flight, error, time.time(), ids)
                else:
                    self._emit_finished(message, status, duration, in_flight, error, ids, running_event)
        except Exception:
            self._count_failure("middleware")

    def _retry_scheduled(self, message: TaskiqMessage, attempt: int) -> bool:
        """A retry middleware prepared attempt ``attempt + 1`` without sending it through this broker.

        ``SmartRetryMiddleware(schedule_source=…)`` hands the retry to a schedule source (no ``pre_send`` here) and,
        with ``no_result_on_retry=False``, leaves the real error in the result: the only trace is in the running
        message's labels, which its kicker updates in place — ``_retries`` becomes ``attempt`` before the retry is
        scheduled. ``SimpleRetryMiddleware`` bumps it on the final attempt too, but then ``_retries`` has reached
        ``max_retries``: the same rule the retry middlewares apply (``retries < max_retries``) tells them apart.
        """
        labels = message.labels
        try:
            retries = int(labels.get(RETRIES_LABEL, 0) or 0)
        except (TypeError, ValueError):
            return False
        if retries < attempt:  # not bumped during this attempt: no retry middleware acted
            return False
        max_retries = labels.get(MAX_RETRIES_LABEL)
        if max_retries is None:
            max_retries = self._default_retry_count()
        try:
            return max_retries is not None and retries < int(max_retries)
        except (TypeError, ValueError):
            return False

    def _default_retry_count(self) -> int | None:
        """``default_retry_count`` of the broker's retry middleware (what it uses without a ``max_retries`` label)."""
        for middleware in getattr(getattr(self, "broker", None), "middlewares", ()):
            count = getattr(middleware, "default_retry_count", None)
            if isinstance(middleware, SimpleRetryMiddleware | SmartRetryMiddleware) and isinstance(count, int):
                return count
        return None

    # -- events ----------------------------------------------------------------------------------------------------
    def _emit_finished(
        self,
        message: TaskiqMessage,
        status: str,
        duration: float,
        in_flight: _InFlight | None,
        error: BaseException | None,
        ids: tuple[str | None, str | None],
        running: TaskEvent | None,
    ) -> None:
        """The final event, built on the loop (a sink that is not deferred; see ``_finish_deferred`` otherwise)."""
        now = time.time()
        # Not from the labels: a retry middleware has already bumped ``_retries`` in them by now.
        attempt = in_flight.attempt if in_flight is not None else _attempt(message.labels)
        event = TaskEvent(
            status,
            in_flight.task_id if in_flight is not None else message.task_id,  # bounded by TaskEvent
            message.task_name,
            now,
            attempt,
            duration_seconds=duration,
            finished_at=now,
            args=_FROM_RUNNING,
            trace_id=ids[0],
            span_id=ids[1],
        )
        event.labels = _attempt_labels(message, in_flight)
        if in_flight is not None:
            event.enqueued_at = in_flight.enqueued_at
            event.started_at = in_flight.started_at
            event.queue_wait_seconds = in_flight.queue_wait
        if error is not None and status != TaskStatus.SUCCESS:
            event.error_type = type(error).__name__
            event.error_message, event.traceback = error_texts(error)
        # The parameters again (the execution history keeps the latest record of an attempt, and a Loki query for
        # one status finds them), but redacted once per attempt: the ``running`` event's, shared.
        if running is None:
            event.args, event.kwargs = list(message.args), dict(message.kwargs)
        self._emit(event, params_from=running)

    def _finish_deferred(
        self,
        message: TaskiqMessage,
        status: str,
        duration: float,
        in_flight: _InFlight,
        error: BaseException | None,
        now: float,
        ids: tuple[str | None, str | None],
    ) -> None:
        finished = FinishedAttempt(
            in_flight, status, now, duration, _attempt_labels(message, in_flight), ids[0], ids[1]
        )
        if error is not None and status != TaskStatus.SUCCESS:
            # Formatted here, not in a sink's thread: the exception's frames are not kept alive, and its __str__
            # (user code) runs where it always ran.
            finished.error_type = type(error).__name__
            finished.error_message, finished.traceback = error_texts(error)
        self._hand_over(finished)
        # After the hand-over, and only when every sink queued the final handle: a sink's thread that sees `done`
        # may drop the running handle, for the final one follows in its queue. One that takes the running handle
        # before this builds the running event: both are recorded, as without coalescing.
        if not finished.refused:
            in_flight.done = True

    def _hand_over(self, item: StartedAttempt | FinishedAttempt) -> None:
        for sink in self._emitting:
            try:
                sink.emit(item)  # type: ignore[arg-type]  # deferred sinks take handles (EventSink.deferred)
            except Exception:
                refuse(item)
                self._count_failure("sink")

    def _positional_names(self, task_name: str) -> tuple[str, ...]:
        """Parameter names of the task function, so positional secrets are redacted by name too."""
        names = self._positional.get(task_name)
        if names is None:
            names = ()
            try:
                broker = getattr(self, "broker", None)
                task = broker.find_task(task_name) if broker is not None else None
                if task is not None:
                    params = inspect.signature(task.original_func).parameters.values()
                    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
                    names = tuple(p.name for p in params if p.kind in kinds)
            except Exception:
                names = ()
            if len(self._positional) < 10_000:
                self._positional[task_name] = names
        return names

    def _emit(self, event: TaskEvent, *, params_from: TaskEvent | None = None) -> None:
        if event.trace_id is None:
            event.trace_id, event.span_id = current_ids()  # send span for pending, execute span for the others
        event.host = self._host
        event.pid = _pid
        # Redacted on first read, by the sinks' threads: never on this loop, never after leaving the process.
        event.defer_redaction(
            self.redactor,
            self._positional_names(event.task_name),
            params_from=params_from,
            on_error=self._on_redaction_error,
        )
        for sink in self._emitting:
            try:
                sink.emit(event)
            except Exception:
                self._count_failure("sink")


class _DuckSink(EventSink):
    """An object with ``emit``/``start``/``close`` (and maybe ``active``, ``attach_broker``) as an EventSink."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink
        self.emit = sink.emit  # type: ignore[method-assign]  # the hot path: no extra call layer

    @property
    def active(self) -> bool:
        return bool(getattr(self.sink, "active", True))

    def attach_broker(self, broker: Any) -> None:
        attach = getattr(self.sink, "attach_broker", None)
        if attach is not None:
            attach(broker)

    async def start(self) -> None:
        await self.sink.start()

    async def close(self) -> None:
        await self.sink.close()
