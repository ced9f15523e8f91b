"""An event sink for tests: keeps every event it receives, in order."""

from __future__ import annotations

from taskiq_monitor.events import EventSink, QueuedEvent, TaskEvent


class RecordingSink(EventSink):
    def __init__(self) -> None:
        self.events: list[TaskEvent] = []

    def emit(self, event: TaskEvent) -> None:
        self.events.append(event)


class HandleSink(EventSink):
    """A sink that builds its events in its own thread (``deferred``): keeps what the middleware hands it — events
    built on the loop (``pending``) and the handles of attempts (StartedAttempt, FinishedAttempt)."""

    deferred = True

    def __init__(self) -> None:
        self.items: list[QueuedEvent] = []

    def emit(self, event: QueuedEvent) -> None:
        self.items.append(event)
