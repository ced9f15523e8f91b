"""Task events written to a real Redis state store the way a worker's state sink writes them (tests only)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry

from taskiq_monitor.events import TaskEvent
from taskiq_monitor.settings import Settings
from taskiq_monitor.sinks.state import StateSink
from taskiq_monitor.store import RedisWriter, WriteBatch


def finished(i: int, at: float, task: str = "tasks:type_0", status: str = "success", **kw: Any) -> TaskEvent:
    """The finished event of execution ``i``, first recorded at ``at`` (as the middleware builds it)."""
    ev = TaskEvent(
        status=status,
        task_id=kw.pop("task_id", f"{i:032x}"),
        task_name=task,
        timestamp=at + 0.2,
        enqueued_at=at,
        started_at=at + 0.05,
        finished_at=at + 0.2,
        duration_seconds=kw.pop("duration_seconds", 0.15),
        queue_wait_seconds=0.05,
        host="worker-1",
        pid=4242,
        args=[i],
        kwargs={"user_id": i, "text": "hello " * 20},
        **kw,
    )
    if status == "failed":
        ev.error_type, ev.error_message = "ValueError", f"bad input {i}"
        ev.traceback = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad input\n'
    return ev


def write_events(conf: Settings, events: list[TaskEvent], batch: int = 2000) -> None:
    """The sink's own batch writer with the sink's own encoding (the flusher thread's path, without its pacing)."""
    writer = RedisWriter(conf)
    sink = StateSink(conf, writer=writer, registry=CollectorRegistry())
    try:
        for start in range(0, len(events), batch):
            ops = [sink._prepare(e) for e in events[start : start + batch]]
            assert writer.write(WriteBatch(now=time.time(), ops=ops)) == 0
    finally:
        writer.close()
