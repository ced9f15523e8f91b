"""The model of the shared task state: event ids, the write batch, the snapshot, and the two protocols.

What a writer applies (:class:`WriteBatch` of :class:`StateOp`) and what a reader returns (:class:`Snapshot`,
:class:`Entry`) are the same for both stores (:mod:`taskiq_monitor.store.redis_store`,
:mod:`taskiq_monitor.store.memory`).
"""

from __future__ import annotations

import math
import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from taskiq_monitor.events import COMPLETED_STATUSES

if TYPE_CHECKING:
    from taskiq_monitor.store.history import Execution, HistoryPage, HistoryQuery

FINISHED_STATUSES: tuple[str, ...] = COMPLETED_STATUSES

# A stream entry id: "<milliseconds>-<sequence>" (Redis stream ids; the memory store mints the same shape).
EVENT_ID_RE = re.compile(r"^(\d{1,20})-(\d{1,20})$")
MAX_ID_PART = 2**64 - 1  # both parts of a Redis stream id are unsigned 64-bit integers


def parse_event_id(value: str) -> tuple[int, int]:
    """``"1700000000000-3"`` -> ``(1700000000000, 3)``; raises ``ValueError`` with a readable message."""
    match = EVENT_ID_RE.match(value)
    if match is None:
        raise ValueError(f"malformed event id {value!r}: expected '<milliseconds>-<sequence>', e.g. '1700000000000-0'")
    key = int(match.group(1)), int(match.group(2))
    if key[0] > MAX_ID_PART or key[1] > MAX_ID_PART:
        raise ValueError(f"malformed event id {value!r}: each part must be at most {MAX_ID_PART}")
    return key


def format_event_id(key: tuple[int, int]) -> str:
    return f"{key[0]}-{key[1]}"


@dataclass(slots=True)
class StateOp:
    """One event, reduced to what the state needs plus its JSON record for the stream."""

    status: str
    task_name: str
    member: str  # "<task_id>:<attempt>"
    timestamp: float
    enqueued_at: float
    started_at: float
    duration: float | None
    payload: str
    track_running: bool = True  # False for events older than the running-set rewrite they travel with (or follow)
    # The execution history (store/history.py): key, encoded record, time in ms. Empty member = no history.
    history_member: bytes = b""
    history_record: bytes = b""
    history_score: int = 0


@dataclass(slots=True)
class WriteBatch:
    """What a writer applies in one round trip."""

    now: float
    ops: list[StateOp] = field(default_factory=list)
    worker: str | None = None  # "host:pid" of a process that executes tasks (heartbeat + running set)
    resync_running: dict[str, tuple[str, float]] | None = None  # member -> (task, started): rewrite the running set
    removals: list[tuple[str, str]] = field(default_factory=list)  # (task, member) started while events were dropped
    task_names: list[str] = field(default_factory=list)  # tasks to register
    leaving: bool = False  # the worker shuts down: drop its heartbeat and running set
    batch_id: str = field(default_factory=lambda: uuid.uuid4().hex)  # applied at most once (retries after timeouts)


@dataclass(slots=True)
class TaskState:
    task_name: str
    pending: int = 0
    oldest_pending_at: float | None = None
    running: int = 0
    expired: int = 0
    totals: dict[str, float] = field(default_factory=dict)  # success/failed/retried/dur_sum/dur_n
    window: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class Snapshot:
    taken_at: float
    workers: int
    tasks: dict[str, TaskState]


@dataclass(slots=True, frozen=True)
class Entry:
    """A stream entry: id, task name, status and the JSON record as stored (never re-encoded)."""

    id: str
    task_name: str
    status: str
    payload: str

    @property
    def key(self) -> tuple[int, int]:
        return parse_event_id(self.id)


class StateWriter(Protocol):
    def write(self, batch: WriteBatch) -> int | None:
        """Apply the batch; may return the number of its events the store rejected (skipped, not retried)."""
        ...

    def close(self) -> None: ...


class StateStore(Protocol):
    """The exporter's view of the state (async for the API, sync for the Prometheus collector)."""

    def snapshot_sync(self, *, with_stats: bool = False) -> Snapshot: ...

    async def snapshot(self, *, with_stats: bool = False) -> Snapshot: ...

    async def read_after(self, after: str, count: int, block_ms: int) -> list[Entry]: ...

    async def range_asc(self, after: str, until: str, count: int) -> list[Entry]: ...

    async def range_desc(self, before: str, since: str, count: int) -> list[Entry]: ...

    async def last_id(self) -> str: ...

    async def first_id(self) -> str | None: ...

    async def task_names(self) -> set[str]: ...

    # The execution history (store/history.py).
    async def history_page(self, query: HistoryQuery) -> HistoryPage: ...

    async def history_attempts(self, task_id: str) -> list[Execution]: ...

    async def history_series(self, minutes: int) -> tuple[int, dict[str, dict[str, list[int]]]]: ...

    async def history_expire_step(self) -> tuple[int, int, bool]:
        """One bounded retention step: (deleted by age, deleted by count, more work left)."""
        ...

    def history_counts_sync(self) -> tuple[int, dict[str, int]]:
        """Executions held, and executions evicted by reason."""
        ...

    async def aclose(self) -> None: ...


def minute_of(ts: float) -> int:
    return int(ts // 60)


def window_minutes(now: float, window: float) -> range:
    """The minute buckets that make up the stats window (minute resolution; the current minute included)."""
    last = minute_of(now)
    return range(last - max(1, math.ceil(window / 60)) + 1, last + 1)
