"""Task events: one record per state change of a task, the single input of every sink.

Data flows one way: a middleware hook builds a :class:`TaskEvent`, and every configured sink (Loki, the live feed)
receives the same object through :meth:`EventSink.emit`. ``emit`` runs on the task's event loop, so sinks must only
enqueue (no I/O, no blocking) and must never raise; their I/O happens off the hot path.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from taskiq_monitor.redaction import Redactor

SCHEMA_VERSION = 1


class TaskStatus(StrEnum):
    """The status of a task event, and the ``status`` label of the metrics (the one home of these values)."""

    PENDING = "pending"  # sent: the broker accepted the message
    RUNNING = "running"  # started in a worker
    SUCCESS = "success"
    FAILED = "failed"  # final failure
    RETRIED = "retried"  # this attempt failed, and a retry was sent or scheduled


# The names earlier modules exported, kept: public.
STATUS_PENDING = TaskStatus.PENDING
STATUS_RUNNING = TaskStatus.RUNNING
STATUS_SUCCESS = TaskStatus.SUCCESS
STATUS_FAILED = TaskStatus.FAILED
STATUS_RETRIED = TaskStatus.RETRIED
EVENT_STATUSES: tuple[TaskStatus, ...] = tuple(TaskStatus)
# The value that unbounded label sets fold into — task names beyond a cap in the metrics, the Loki stream labels
# and the state store; error types in the metrics — so a bug that invents names cannot explode series.
OTHER = "other"
# Task ids are the application's (taskiq's ``with_task_id``), of any length: a longer one is recorded as its first
# characters and a digest of the whole, the same for every event of the task and for the API's lookups (which bound
# the id they are given alike). The bound keeps a record's fixed part small beside the parameters' caps, and within
# Loki's limits on structured metadata (64 KiB by default); a uuid is 32 characters.
MAX_RECORDED_TASK_ID_CHARS = 512
_TASK_ID_DIGEST = "~sha256:"  # + 32 hex digits


def bounded_task_id(task_id: str) -> str:
    """``task_id``, or when longer than ``MAX_RECORDED_TASK_ID_CHARS``, its head and a digest of the whole (as long)."""
    if len(task_id) <= MAX_RECORDED_TASK_ID_CHARS:
        return task_id
    digest = hashlib.sha256(task_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return task_id[: MAX_RECORDED_TASK_ID_CHARS - len(_TASK_ID_DIGEST) - 32] + _TASK_ID_DIGEST + digest


# Statuses of a finished attempt (``taskiq_tasks_completed_total{status}``).
COMPLETED_STATUSES: tuple[TaskStatus, ...] = (TaskStatus.SUCCESS, TaskStatus.FAILED, TaskStatus.RETRIED)

# One lock for every event's deferred redaction: taken only by the first reader of an event's free-form fields (a
# sink's background thread), never on the event loop by our own sinks. Reentrant: a ``failed`` event settles the
# ``running`` event whose redacted parameters it reuses.
_SETTLE_LOCK = threading.RLock()
# Bits of TaskEvent._texts: which redacted parameter fields hold the JSON text their check was made on (bytes). A flag,
# not the type alone: a hand-built event may carry bytes of its own, which are a value to render, not JSON.
_ARGS, _KWARGS, _LABELS = 1, 2, 4


class TaskEvent:
    """A state change of one task execution attempt (field meanings: docs/loki.md, "Record schema").

    The free-form fields (``args``, ``kwargs``, ``labels``, ``error_message``, ``traceback``) may be *deferred*: the
    middleware hands sinks an event whose raw fields are redacted on first read (:meth:`defer_redaction`), so the
    redaction walk runs in the sink's background thread instead of on the task's event loop. Every reader — ours,
    a custom sink, ``to_record`` — goes through the properties, so nothing reads the raw values: a secret is
    redacted before anything can leave the process, as before, only later.
    """

    # The public fields, in record order (``to_record`` moves host/pid into ``worker``).
    FIELDS: tuple[str, ...] = (
        "status",
        "task_id",
        "task_name",
        "timestamp",
        "attempt",
        "host",
        "pid",
        "enqueued_at",
        "started_at",
        "finished_at",
        "duration_seconds",
        "queue_wait_seconds",
        "args",
        "kwargs",
        "labels",
        "error_type",
        "error_message",
        "traceback",
        "trace_id",
        "span_id",
    )
    __slots__ = (
        "_args",
        "_error_message",
        "_kwargs",
        "_labels",
        "_line",
        "_names",
        "_on_error",
        "_pending",
        "_secrets",
        "_source",
        "_texts",
        "_traceback",
        "attempt",
        "duration_seconds",
        "enqueued_at",
        "error_type",
        "finished_at",
        "host",
        "pid",
        "queue_wait_seconds",
        "span_id",
        "started_at",
        "status",
        "task_id",
        "task_name",
        "timestamp",
        "trace_id",
    )

    def __init__(
        self,
        status: str,
        task_id: str,
        task_name: str,
        timestamp: float,
        attempt: int = 1,
        host: str = "",
        pid: int = 0,
        enqueued_at: float | None = None,
        started_at: float | None = None,
        finished_at: float | None = None,
        duration_seconds: float | None = None,
        queue_wait_seconds: float | None = None,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        labels: dict[str, Any] | None = None,
        error_type: str | None = None,
        error_message: str | None = None,
        traceback: str | None = None,
        trace_id: str | None = None,
        span_id: str | None = None,
    ) -> None:
        self.status = status
        self.task_id = task_id if len(task_id) <= MAX_RECORDED_TASK_ID_CHARS else bounded_task_id(task_id)
        self.task_name = task_name
        self.timestamp = timestamp  # unix seconds of the state change
        self.attempt = attempt
        self.host = host
        self.pid = pid
        self.enqueued_at = enqueued_at
        self.started_at = started_at
        self.finished_at = finished_at
        self.duration_seconds = duration_seconds
        self.queue_wait_seconds = queue_wait_seconds
        # Objects, or once redacted possibly the JSON text that was checked (bytes, flagged in _texts: see _settle).
        self._args: Any = [] if args is None else args
        self._kwargs: Any = {} if kwargs is None else kwargs
        self._labels: Any = {} if labels is None else labels
        self._texts = 0  # _ARGS | _KWARGS | _LABELS: which of the three hold a checked JSON text
        self.error_type = error_type
        self._error_message = error_message
        self._traceback = traceback
        self.trace_id = trace_id
        self.span_id = span_id
        # Deferred redaction (defer_redaction): the redactor while pending, then None. Slots, not a tuple: every object
        # a queued event holds is one more for the cyclic GC to track and promote.
        self._pending: Redactor | None = None
        self._names: Sequence[str] = ()
        self._source: TaskEvent | None = None
        self._on_error: Callable[[], None] | None = None
        self._line: str | None = None
        # Once settled: the texts of the values its parameters had redacted by key (Redactor.redact_fields' `found`),
        # which a later event of the attempt (params_from) scrubs from its error text — the raw parameters are gone
        # by then. Never read by anything that renders the event; freed with it (empty, the shared (), nearly always).
        self._secrets: tuple[str, ...] = ()

    # -- deferred redaction ----------------------------------------------------------------------------------------
    def defer_redaction(
        self,
        redactor: Redactor,
        positional_names: Sequence[str] = (),
        *,
        params_from: TaskEvent | None = None,
        on_error: Callable[[], None] | None = None,
    ) -> None:
        """Redact the free-form fields on their first read, with ``redactor.redact_fields``.

        ``params_from``: an earlier event of the same attempt whose (redacted) args/kwargs this one carries, so an
        attempt's parameters are redacted once; the values they had redacted by key are still scrubbed from this
        event's error message and traceback (that event keeps their texts for it). ``on_error`` runs when redaction
        fails; the fields are then emptied (never an unredacted record).
        """
        self._names, self._source, self._on_error = positional_names, params_from, on_error
        self._pending = redactor

    def _settle(self) -> None:
        with _SETTLE_LOCK:
            redactor = self._pending
            if redactor is None:
                return
            names, source, on_error = self._names, self._source, self._on_error
            # Released now: a settled event no longer keeps its attempt's running event (or a callback) alive.
            self._source = self._on_error = None
            try:
                if source is not None:
                    if source._pending is not None:
                        source._settle()  # this lock is reentrant
                    # The source's redacted parameters as they are (a checked JSON text, or the walk's copy).
                    args, kwargs, labels = source._args, source._kwargs, source._labels
                    texts = source._texts
                    if (
                        self._error_message is None
                        and self._traceback is None
                        and self._labels == _decoded(labels, texts & _LABELS)
                    ):
                        # Nearly always: the labels did not change during the attempt (a retry middleware bumps
                        # them only on a failure) and were already safe as they were (equal to a redacted copy).
                        safe: tuple[Any, Any, Any, str | None, str | None] = (args, kwargs, labels, None, None)
                    else:
                        texts &= _ARGS | _KWARGS
                        safe = redactor.redact_fields(
                            args,
                            kwargs,
                            self._labels,
                            self._error_message,
                            self._traceback,
                            names,
                            params_done=True,
                            as_json=True,
                            secrets=source._secrets,
                        )
                        if type(safe[2]) is bytes:  # the redactor returns bytes only for a text it checked
                            texts |= _LABELS
                else:
                    found: list[str] = []
                    safe = redactor.redact_fields(
                        self._args,
                        self._kwargs,
                        self._labels,
                        self._error_message,
                        self._traceback,
                        names,
                        as_json=True,
                        found=found,
                    )
                    if found:
                        self._secrets = tuple(found)
                    texts = (
                        (_ARGS if type(safe[0]) is bytes else 0)
                        | (_KWARGS if type(safe[1]) is bytes else 0)
                        | (_LABELS if type(safe[2]) is bytes else 0)
                    )
                self._args, self._kwargs, self._labels, self._error_message, self._traceback = safe
                self._texts = texts
                if self.error_type is not None:
                    self.error_type = redactor.cap_error_type(self.error_type)
            except Exception:
                self._args, self._kwargs, self._labels = [], {}, {}
                self._texts = 0
                self._secrets = ()
                self._error_message = self._traceback = None
                if on_error is not None:
                    on_error()
            finally:
                self._pending = None  # last: a reader that sees None sees the redacted fields

    @property
    def args(self) -> list[Any]:
        if self._pending is not None:
            self._settle()
        return _decoded(self._args, self._texts & _ARGS)  # type: ignore[no-any-return]

    @args.setter
    def args(self, value: list[Any]) -> None:
        self._args = value
        self._texts &= ~_ARGS

    @property
    def kwargs(self) -> dict[str, Any]:
        if self._pending is not None:
            self._settle()
        return _decoded(self._kwargs, self._texts & _KWARGS)  # type: ignore[no-any-return]

    @kwargs.setter
    def kwargs(self, value: dict[str, Any]) -> None:
        self._kwargs = value
        self._texts &= ~_KWARGS

    @property
    def labels(self) -> dict[str, Any]:
        if self._pending is not None:
            self._settle()
        return _decoded(self._labels, self._texts & _LABELS)  # type: ignore[no-any-return]

    @labels.setter
    def labels(self, value: dict[str, Any]) -> None:
        self._labels = value
        self._texts &= ~_LABELS

    @property
    def error_message(self) -> str | None:
        if self._pending is not None:
            self._settle()
        return self._error_message

    @error_message.setter
    def error_message(self, value: str | None) -> None:
        self._error_message = value

    @property
    def traceback(self) -> str | None:
        if self._pending is not None:
            self._settle()
        return self._traceback

    @traceback.setter
    def traceback(self, value: str | None) -> None:
        self._traceback = value

    def redacted_fields(self, *, for_json: bool = False) -> tuple[Any, Any, Any, str | None, str | None]:
        """``(args, kwargs, labels, error_message, traceback)``, redacted: one call where five reads would each check
        for pending redaction (the flusher reads them for every record).

        ``for_json``: a field kept as the JSON text that was checked comes as an ``orjson.Fragment`` of it, for
        ``orjson.dumps`` only (embedded as it is, not decoded and encoded again); without it, every field is an
        object (hence ``Any``: a list or a dict, or a fragment)."""
        if self._pending is not None:
            self._settle()
        args, kwargs, labels = _params(self, for_json)
        return args, kwargs, labels, self._error_message, self._traceback

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS)
        return f"TaskEvent({fields})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskEvent):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.FIELDS)

    __hash__ = None  # type: ignore[assignment]  # mutable, like the dataclass it replaces


def _decoded(value: Any, is_text: int) -> Any:
    """A field kept as the JSON text that was checked (see ``TaskEvent._settle``) decoded, afresh on every read, for
    a reader that wants objects (our sinks never do: they embed the text); any other value as it is."""
    return orjson.loads(value) if is_text else value


def _params(event: TaskEvent, for_json: bool) -> tuple[Any, Any, Any]:
    """The event's (settled) args, kwargs and labels: a checked JSON text as an ``orjson.Fragment`` (``for_json``) or
    decoded."""
    args, kwargs, labels, texts = event._args, event._kwargs, event._labels, event._texts
    if texts:
        if texts & _ARGS:
            args = orjson.Fragment(args) if for_json else orjson.loads(args)
        if texts & _KWARGS:
            kwargs = orjson.Fragment(kwargs) if for_json else orjson.loads(kwargs)
        if texts & _LABELS:
            labels = orjson.Fragment(labels) if for_json else orjson.loads(labels)
    return args, kwargs, labels


def to_record(event: TaskEvent) -> dict[str, Any]:
    """The JSON-safe record of an event (docs/loki.md, "Record schema"); what Loki and the live feed carry."""
    return _record(event, False)


def _record(event: TaskEvent, for_json: bool) -> dict[str, Any]:
    if event._pending is not None:
        event._settle()
    args, kwargs, labels = _params(event, for_json)
    return {
        "schema_version": SCHEMA_VERSION,
        "status": event.status,
        "task_id": event.task_id,
        "task_name": event.task_name,
        # The contract's timestamp is RFC3339 (UTC, microseconds); enqueued_at/started_at/finished_at: unix seconds.
        "timestamp": rfc3339(event.timestamp),
        "attempt": event.attempt,
        "enqueued_at": event.enqueued_at,
        "started_at": event.started_at,
        "finished_at": event.finished_at,
        "duration_seconds": event.duration_seconds,
        "queue_wait_seconds": event.queue_wait_seconds,
        "args": args,
        "kwargs": kwargs,
        "labels": labels,
        "error_type": event.error_type,
        "error_message": event._error_message,
        "traceback": event._traceback,
        "trace_id": event.trace_id,
        "span_id": event.span_id,
        "worker": {"host": event.host, "pid": event.pid},
    }


def record_json(event: TaskEvent) -> str:
    """The record as one line of compact JSON (UTF-8 text, not ASCII-escaped), computed once per event.

    Every sink that ships the record (the state stream, Loki) shares this text: an event is serialised once, with
    orjson (~2.6 µs for a typical record, against ~9.5 µs for ``json.dumps`` of the same dict). Safe to call from
    several threads: at worst two compute the same text.
    """
    line = event._line
    if line is None:
        try:
            line = orjson.dumps(_record(event, True), default=_fallback).decode()
        except TypeError:
            # orjson refuses what is not valid UTF-8 (a lone surrogate in a JSON-decoded task id): escape it instead.
            line = json.dumps(to_record(event), default=_fallback, separators=(",", ":"))
        event._line = line
    return line


def _fallback(value: Any) -> str:
    # Redacted records hold only JSON types; a hand-built event (tests, custom code) may not.
    return str(value)


_last_second: tuple[int, str] = (-1, "")  # replaced as a whole: safe to read from any thread


def rfc3339(unix_seconds: float) -> str:
    """``2026-11-28T23:44:22.988142Z``; the date-time part is cached per second (this runs for every record)."""
    global _last_second
    second = int(unix_seconds)
    cached = _last_second
    if cached[0] != second:
        cached = (second, datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
        _last_second = cached
    return f"{cached[1]}.{int((unix_seconds - second) * 1_000_000):06d}Z"


# -- events built off the loop ------------------------------------------------------------------------------------
# Guards the one-time build of an attempt's events: the state and Loki threads may resolve the same handle at once.
_BUILD_LOCK = threading.Lock()


class EventContext:
    """What building an attempt's events needs besides the attempt: one per middleware, shared by its handles."""

    __slots__ = ("coalesce", "names", "on_error", "redactor")

    def __init__(
        self,
        redactor: Redactor,
        names: Callable[[str], Sequence[str]],
        on_error: Callable[[], None] | None,
        coalesce: bool,
    ) -> None:
        self.redactor = redactor
        self.names = names  # task name -> positional parameter names (redacted by name too)
        self.on_error = on_error
        self.coalesce = coalesce


class StartedAttempt:
    """An attempt's ``running`` event, not built yet: what the middleware hands to a sink whose thread builds it
    (:attr:`EventSink.deferred`).

    The task's loop only records the attempt (references and copies of the message's containers) and appends this
    handle to the sinks' queues; :func:`resolve` builds the :class:`TaskEvent` in the sink's thread, once for all
    sinks. When the attempt has already finished by then (``done``) and ``coalesce`` is on, the ``running`` event is
    not built at all: the final event (which follows in the same queue) carries everything it held — start time,
    queue wait, parameters. Attributes read on the loop by sinks (``status``, ``task_id``, ``task_name``, ``attempt``,
    ``started_at``, ``timestamp``) are those of the running event.
    """

    __slots__ = (
        "_context",
        "_event",
        "args",
        "attempt",
        "done",
        "enqueued_at",
        "host",
        "kwargs",
        "labels",
        "pid",
        "queue_wait",
        "span_id",
        "started_at",
        "task_id",
        "task_name",
        "trace_id",
    )
    status: str = "running"

    def __init__(
        self,
        task_id: str,
        task_name: str,
        attempt: int,
        started_at: float,
        enqueued_at: float | None,
        queue_wait: float | None,
    ) -> None:
        self.task_id = task_id
        self.task_name = task_name
        self.attempt = attempt
        self.started_at = started_at
        self.enqueued_at = enqueued_at
        self.queue_wait = queue_wait
        # Set once the attempt's FinishedAttempt is in every sink's queue: a flag, not a reference to it (which refers
        # to this handle), so that an attempt is freed by reference counting, never left to the cyclic GC.
        self.done = False
        self._event: TaskEvent | None = None
        self._context: EventContext | None = None  # set by defer(): only handed to sinks then

    def defer(
        self,
        context: EventContext,
        host: str,
        pid: int,
        args: list[Any],
        kwargs: dict[str, Any],
        labels: dict[str, Any],
        trace_id: str | None,
        span_id: str | None,
    ) -> None:
        """Record what the events of this attempt carry (called on the loop, before the handle is emitted)."""
        self._context = context
        self.host, self.pid = host, pid
        self.args, self.kwargs, self.labels = args, kwargs, labels
        self.trace_id, self.span_id = trace_id, span_id

    @property
    def timestamp(self) -> float:
        return self.started_at

    def event(self) -> TaskEvent | None:
        """The ``running`` event, or None when it is coalesced into the final event that follows."""
        event = self._event
        if event is not None:
            return event
        context = self._context
        if context is None:
            raise RuntimeError("StartedAttempt.event() before defer()")
        if self.done and context.coalesce:
            return None
        names = context.names(self.task_name)  # outside the lock: may inspect the task's signature
        with _BUILD_LOCK:
            event = self._event
            if event is None:
                # Positional, in TaskEvent's parameter order: half the cost of keywords, for every attempt.
                event = TaskEvent(
                    STATUS_RUNNING,
                    self.task_id,
                    self.task_name,
                    self.started_at,
                    self.attempt,
                    self.host,
                    self.pid,
                    self.enqueued_at,
                    self.started_at,
                    None,  # finished_at
                    None,  # duration_seconds
                    self.queue_wait,
                    self.args,
                    self.kwargs,
                    self.labels,
                    None,  # error_type
                    None,  # error_message
                    None,  # traceback
                    self.trace_id,
                    self.span_id,
                )
                event.defer_redaction(context.redactor, names, on_error=context.on_error)
                self._event = event
        return event


class FinishedAttempt:
    """The final event (``success``, ``failed``, ``retried``) of a :class:`StartedAttempt`, not built yet."""

    __slots__ = (
        "_event",
        "attempt",
        "duration",
        "error_message",
        "error_type",
        "labels",
        "of",
        "refused",
        "span_id",
        "status",
        "task_id",
        "task_name",
        "timestamp",
        "trace_id",
        "traceback",
    )

    def __init__(
        self,
        of: StartedAttempt,
        status: str,
        timestamp: float,
        duration: float,
        labels: dict[str, Any],
        trace_id: str | None,
        span_id: str | None,
        error_type: str | None = None,
        error_message: str | None = None,
        traceback: str | None = None,
    ) -> None:
        self.of = of
        self.status = status
        self.task_id, self.task_name, self.attempt = of.task_id, of.task_name, of.attempt
        self.timestamp = timestamp
        self.duration = duration
        self.labels = labels
        self.trace_id, self.span_id = trace_id, span_id
        self.error_type, self.error_message, self.traceback = error_type, error_message, traceback
        # Set by a sink that could not queue this handle (full): the attempt's running event must not be coalesced
        # into a final event that will never come (see the middleware's hand-over).
        self.refused = False
        self._event: TaskEvent | None = None

    @property
    def started_at(self) -> float:
        return self.of.started_at

    def event(self) -> TaskEvent:
        event = self._event
        if event is not None:
            return event
        of = self.of
        context = of._context
        if context is None:
            raise RuntimeError("FinishedAttempt.event() of an attempt that was not deferred")
        names = context.names(self.task_name)
        with _BUILD_LOCK:
            event = self._event
            if event is None:
                running = of._event
                # Positional, in TaskEvent's parameter order (see StartedAttempt.event). The parameters again (the
                # history keeps an attempt's latest record, and a Loki query for one status finds them), redacted
                # once per attempt: the running event's when it was built (params_from below).
                event = TaskEvent(
                    self.status,
                    self.task_id,
                    self.task_name,
                    self.timestamp,
                    self.attempt,
                    of.host,
                    of.pid,
                    of.enqueued_at,
                    of.started_at,
                    self.timestamp,  # finished_at
                    self.duration,
                    of.queue_wait,
                    of.args if running is None else None,
                    of.kwargs if running is None else None,
                    self.labels,
                    self.error_type,
                    self.error_message,
                    self.traceback,
                    self.trace_id,
                    self.span_id,
                )
                event.defer_redaction(context.redactor, names, params_from=running, on_error=context.on_error)
                self._event = event
        return event


# What a sink's queue may hold: an event built on the loop, or a handle its thread builds the event from.
QueuedEvent = TaskEvent | StartedAttempt | FinishedAttempt


def refuse(item: QueuedEvent) -> None:
    """Call when a sink could not queue ``item`` (its queue full, or emit failing): a refused final handle keeps its
    attempt's running event from being coalesced into a final event that never comes."""
    if isinstance(item, FinishedAttempt):
        item.refused = True


def resolve(item: QueuedEvent) -> TaskEvent | None:
    """The event a queued item stands for; None for a ``running`` event coalesced into its final one. Call it in
    the sink's thread: it may build the event (and is where a deferred sink's redaction starts)."""
    if isinstance(item, TaskEvent):
        return item
    return item.event()


class EventSink:
    """Receiver of task events; subclass it. ``emit`` runs on the task's event loop: it must only enqueue (no I/O,
    no blocking) and must never raise.

    Like taskiq's ``TaskiqMiddleware.set_broker``, the optional parts have defaults, so the middleware calls them
    without probing: ``active`` (a dormant sink gets no events — none are built for it), ``attach_broker`` (called
    at start-up before ``start``, for a sink that needs the broker), ``start`` and ``close``.
    """

    # A sink whose thread calls :func:`resolve` on what it dequeues may get, instead of events built on the task's
    # loop, handles (StartedAttempt, FinishedAttempt) whose events its thread builds. The middleware hands handles
    # only when every active sink is deferred; any other sink gets TaskEvents, as always.
    deferred: bool = False

    @property
    def active(self) -> bool:
        """Whether this sink wants events now."""
        return True

    def attach_broker(self, broker: Any) -> None:
        """Called by the middleware's start-up, before :meth:`start`."""

    def emit(self, event: TaskEvent) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        """Called by the middleware's start-up."""

    async def close(self) -> None:
        """Called by the middleware's shutdown: flush what is buffered, within a bounded time."""
