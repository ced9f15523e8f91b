"""An event sink for tests: keeps every event it receives, in order."""

from __future__ import annotations

from taskiq_monitor.events import TaskEvent


class RecordingSink:
    def __init__(self) -> None:
        self.events: list[TaskEvent] = []

    def emit(self, event: TaskEvent) -> None:
        self.events.append(event)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass
