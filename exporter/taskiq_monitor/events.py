"""Task events: one record per state change of a task, the single input of every sink.

Data flows one way: a middleware hook builds a :class:`TaskEvent`, and every configured sink (Loki, the live feed)
receives the same object through :meth:`EventSink.emit`. ``emit`` runs on the task's event loop, so sinks must only
enqueue (no I/O, no blocking) and must never raise; their I/O happens off the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

SCHEMA_VERSION = 1

STATUS_PENDING = "pending"
STATUS_RUNNING = "running"
EVENT_STATUSES: tuple[str, ...] = (STATUS_PENDING, STATUS_RUNNING, "success", "failed", "retried")


@dataclass(slots=True)
class TaskEvent:
    """A state change of one task execution attempt (field meanings: README, "Event record")."""

    status: str
    task_id: str
    task_name: str
    timestamp: float  # unix seconds of the state change
    attempt: int = 1
    host: str = ""
    pid: int = 0
    enqueued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    duration_seconds: float | None = None
    queue_wait_seconds: float | None = None
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    trace_id: str | None = None
    span_id: str | None = None


def to_record(event: TaskEvent) -> dict[str, Any]:
    """The JSON-safe record of an event (README, "Event record"); what Loki and the live feed carry."""
    record: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
    for name in TaskEvent.__slots__:
        record[name] = getattr(event, name)
    # The contract's timestamp is RFC3339 (UTC, microseconds); enqueued_at/started_at/finished_at stay unix seconds.
    record["timestamp"] = rfc3339(event.timestamp)
    record["worker"] = {"host": record.pop("host"), "pid": record.pop("pid")}
    return record


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


@runtime_checkable
class EventSink(Protocol):
    """Receiver of task events. ``emit`` must be non-blocking and must not raise."""

    def emit(self, event: TaskEvent) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...
