"""An event sink for tests: keeps every event it receives, in order."""

from __future__ import annotations

from taskiq_monitor.events import EventSink, TaskEvent


class RecordingSink(EventSink):
    def __init__(self) -> None:
        self.events: list[TaskEvent] = []

    def emit(self, event: TaskEvent) -> None:
        self.events.append(event)
