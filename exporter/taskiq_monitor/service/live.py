"""Queue state metrics, the task health API and the live feed (``WebSocket /ws/events``).

Included by ``create_app`` when a state store exists (``TASKIQ_MONITOR_REDIS_URL``, or the in-process store of the
in-memory demo). Everything here reads the state written by ``StateSink`` (see ``taskiq_monitor.store``).

WebSocket protocol (``/ws/events``)
-----------------------------------
Query parameters (all optional): ``task_name`` and ``status`` (repeatable or comma-separated; unknown values are
rejected), ``last_event_id`` (resume: every retained event after it is delivered first, in order, exactly once, then
live events), ``token`` (bearer token, when the ``Authorization`` header cannot be set).

Server frames (one JSON object per text frame)::

    {"type": "event", "id": "1700000000000-0", "event": {...event record...}}
    {"type": "live", "last_event_id": "..."}         the backlog of a resume has been sent; live events follow
    {"type": "gap", "first_event_id": "...", "message": "..."}  events after the resume id were trimmed from the
                                                     stream (before or while the backlog is sent)
    {"type": "ping", "ts": 1700000000.0}             every live_ping_seconds while idle
    {"type": "pong"}                                 answer to a client ping
    {"type": "error", "code": "...", "message": "..."}

Client frames: ``{"type": "ping"}`` and ``{"type": "filter", "task_name": [...], "status": [...]}`` (replace the
filters). A ``last_event_id`` beyond the stream's last id (from another Redis, or a flushed one) gets an error frame
with code ``future_id``. Close codes: 4400 invalid parameters, 4401 unauthorized, 1009 message too large, 1011 state
store unavailable, 1013 slow consumer (the client fell more than ``live_client_queue`` events behind; reconnect with
``last_event_id`` to continue without loss; also when more than 32 MiB of frames are queued for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Query, WebSocket, WebSocketDisconnect, status
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from pydantic import BaseModel, Field

from taskiq_monitor.events import EVENT_STATUSES
from taskiq_monitor.settings import Settings
from taskiq_monitor.store import Entry, Snapshot, StateStore, format_event_id, parse_event_id

logger = logging.getLogger("taskiq_monitor.live")

MAX_PAGE = 50
_SCAN_CHUNK = 500
_MAX_SCAN = 20_000  # stream entries examined per /api/v1/events request (filters may match rarely)
_READ_BLOCK_MS = 1000
_SLOW_CLIENT_GRACE = 15.0  # seconds a cut-off client gets to read its error frame before the socket is dropped
# Frames queued per client are also bounded by size: live_client_queue frames of up to event_max_record_bytes each
# (64 KiB by default) could otherwise hold hundreds of MiB per slow client. 32 MiB is ~100 000 typical events.
CLIENT_QUEUE_BYTES = 32 * 1024 * 1024
# A resume id at most this far (ms) beyond the stream's last id is accepted (an event written meanwhile).
_FUTURE_TOLERANCE_MS = 60_000

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_LARGE = 1009
CLOSE_UNAVAILABLE = 1011
CLOSE_SLOW_CONSUMER = 1013


# -- metrics -------------------------------------------------------------------------------------------------------
class StateCollector:
    """``taskiq_tasks_pending``, ``taskiq_task_oldest_pending_age_seconds``, ``taskiq_workers``,
    ``taskiq_tasks_pending_expired_total``, ``taskiq_monitor_state_up``, ``taskiq_monitor_live_clients``.

    Each scrape also expires pending entries older than the horizon and forgets workers without heartbeat.
    The values are queue-wide (the same from every exporter sharing the Redis): aggregate with ``max``, not ``sum``.
    """

    def __init__(self, store: StateStore, clients: Callable[[], int] = lambda: 0) -> None:
        self.store = store
        self.clients = clients

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("taskiq_monitor_state_up", "1 when the shared task state (Redis) could be read.")
        try:
            snap = self.store.snapshot_sync()
        except Exception:
            logger.warning("taskiq-monitor: cannot read the task state", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        pending = GaugeMetricFamily(
            "taskiq_tasks_pending",
            "Tasks sent and not yet started, per task type (all processes).",
            labels=["task_name"],
        )
        oldest = GaugeMetricFamily(
            "taskiq_task_oldest_pending_age_seconds",
            "Age of the oldest pending task, per task type (0 when none is pending).",
            labels=["task_name"],
        )
        expired = CounterMetricFamily(
            "taskiq_tasks_pending_expired",
            "Pending entries dropped after the pending horizon (lost messages), per task type.",
            labels=["task_name"],
        )
        for name in sorted(snap.tasks):
            task = snap.tasks[name]
            pending.add_metric([name], task.pending)
            age = max(0.0, snap.taken_at - task.oldest_pending_at) if task.oldest_pending_at is not None else 0.0
            oldest.add_metric([name], age)
            expired.add_metric([name], task.expired)
        yield pending
        yield oldest
        yield expired
        yield GaugeMetricFamily("taskiq_workers", "Live worker processes (by heartbeat).", value=snap.workers)
        yield GaugeMetricFamily(
            "taskiq_monitor_live_clients", "WebSocket clients of this exporter's live feed.", value=self.clients()
        )


# -- fan-out -------------------------------------------------------------------------------------------------------
class _Client:
    __slots__ = ("max_bytes", "overflowed", "queue", "queued_bytes", "sender", "statuses", "task_names")

    def __init__(
        self, size: int, task_names: set[str] | None, statuses: set[str] | None, max_bytes: int = CLIENT_QUEUE_BYTES
    ) -> None:
        self.queue: asyncio.Queue[tuple[tuple[int, int], str]] = asyncio.Queue(size)
        self.queued_bytes = 0  # characters of the queued frames (≈ bytes: the records are mostly ASCII JSON)
        self.max_bytes = max_bytes
        self.task_names = task_names
        self.statuses = statuses
        self.sender: asyncio.Task[None] | None = None
        self.overflowed = False

    def wants(self, entry: Entry) -> bool:
        return (self.task_names is None or entry.task_name in self.task_names) and (
            self.statuses is None or entry.status in self.statuses
        )


def event_frame(entry: Entry) -> str:
    # The record is stored as JSON: embed it as is (no decode/encode per client).
    return f'{{"type":"event","id":"{entry.id}","event":{entry.payload}}}'


class Broadcaster:
    """One reader of the stream per exporter; hands each entry to every client's bounded queue without waiting.

    A client whose queue is full (``live_client_queue`` frames or ``CLIENT_QUEUE_BYTES``) is cut off (its sender
    task cancelled); the others never wait for it.
    """

    def __init__(self, store: StateStore, queue_size: int) -> None:
        self.store = store
        self.queue_size = queue_size
        self.clients: set[_Client] = set()
        self.last_key: tuple[int, int] = (0, 0)
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Entries are dispatched a read at a time; a client that keeps up must never overflow within one read.
        self.chunk = max(1, min(_SCAN_CHUNK, queue_size // 4))

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="taskiq-monitor-live-reader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def register(self, client: _Client) -> tuple[int, int]:
        """Add a client; every entry after the returned id will be offered to it."""
        self.clients.add(client)
        return self.last_key

    def unregister(self, client: _Client) -> None:
        self.clients.discard(client)

    async def _run(self) -> None:
        backoff = 0.1
        while not self.ready.is_set():
            try:
                self.last_key = parse_event_id(await self.store.last_id())
                self.ready.set()
            except Exception:
                logger.warning("taskiq-monitor live feed: state store unavailable", exc_info=backoff == 0.1)
                await asyncio.sleep(backoff)
                backoff = min(5.0, backoff * 2)
        backoff = 0.1
        while True:
            try:
                entries = await self.store.read_after(format_event_id(self.last_key), self.chunk, _READ_BLOCK_MS)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("taskiq-monitor live feed: cannot read the event stream", exc_info=backoff == 0.1)
                await asyncio.sleep(backoff)
                backoff = min(5.0, backoff * 2)
                continue
            self.dispatch(entries)

    def dispatch(self, entries: list[Entry]) -> None:
        for entry in entries:
            key = entry.key
            frame: str | None = None
            for client in list(self.clients):
                if not client.wants(entry):
                    continue
                if frame is None:
                    frame = event_frame(entry)
                try:
                    if client.queued_bytes + len(frame) > client.max_bytes:
                        raise asyncio.QueueFull
                    client.queue.put_nowait((key, frame))
                    client.queued_bytes += len(frame)
                except asyncio.QueueFull:
                    client.overflowed = True
                    self.clients.discard(client)
                    if client.sender is not None:
                        client.sender.cancel()
            self.last_key = key


# -- request parsing -------------------------------------------------------------------------------------------------
class InputError(ValueError):
    """Bad client input, reported as a 422 (REST) or an error frame (WebSocket)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for value in values or []:
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return out


def parse_filters(
    task_names: list[str] | None, statuses: list[str] | None, known: set[str]
) -> tuple[set[str] | None, set[str] | None]:
    names = _split(task_names)
    unknown = sorted(set(names) - known)
    if unknown:
        listing = ", ".join(sorted(known)) or "none yet"
        raise InputError("unknown_task_name", f"unknown task_name {', '.join(map(repr, unknown))}; known: {listing}")
    stats = _split(statuses)
    bad = sorted(set(stats) - set(EVENT_STATUSES))
    if bad:
        raise InputError(
            "unknown_status", f"unknown status {', '.join(map(repr, bad))}; one of: {', '.join(EVENT_STATUSES)}"
        )
    return (set(names) or None), (set(stats) or None)


def parse_id(value: str, name: str) -> tuple[int, int]:
    try:
        return parse_event_id(value.strip())
    except ValueError as exc:
        raise InputError("malformed_id", f"{name}: {exc}") from None


# -- API models --------------------------------------------------------------------------------------------------------
class WindowStats(BaseModel):
    seconds: int = Field(description="Length of the window (minute resolution, the current minute included).")
    success: int
    failed: int
    retried: int
    success_rate: float | None = Field(description="success / (success + failed); null when nothing finished.")
    avg_duration_seconds: float | None = Field(description="Mean duration of attempts finished in the window.")


class TaskHealth(BaseModel):
    task_name: str
    pending: int = Field(description="Sent and not yet started (all processes and hosts).")
    oldest_pending_age_seconds: float | None
    running: int = Field(description="Executing now in live worker processes.")
    success_total: int
    failed_total: int
    retried_total: int
    avg_duration_seconds: float | None = Field(description="Mean duration of all finished attempts.")
    pending_expired_total: int = Field(description="Pending entries expired by the horizon (lost messages).")
    window: WindowStats


class TasksResponse(BaseModel):
    generated_at: datetime
    workers: int = Field(description="Live worker processes (by heartbeat).")
    tasks: list[TaskHealth]


class EventItem(BaseModel):
    id: str = Field(description="Stream id '<ms>-<seq>'; pass it as last_event_id / cursor.")
    event: dict[str, Any] = Field(description="The event record (schema_version 1).")


class EventsPage(BaseModel):
    events: list[EventItem] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as cursor for older events; null at the end of the stream.")


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def tasks_response(snap: Snapshot, window: int) -> TasksResponse:
    tasks: list[TaskHealth] = []
    for name in sorted(snap.tasks):
        t = snap.tasks[name]
        w = t.window
        tasks.append(
            TaskHealth(
                task_name=name,
                pending=t.pending,
                oldest_pending_age_seconds=(
                    max(0.0, snap.taken_at - t.oldest_pending_at) if t.oldest_pending_at is not None else None
                ),
                running=t.running,
                success_total=int(t.totals.get("success", 0)),
                failed_total=int(t.totals.get("failed", 0)),
                retried_total=int(t.totals.get("retried", 0)),
                avg_duration_seconds=_ratio(t.totals.get("dur_sum", 0.0), t.totals.get("dur_n", 0)),
                pending_expired_total=t.expired,
                window=WindowStats(
                    seconds=window,
                    success=int(w.get("success", 0)),
                    failed=int(w.get("failed", 0)),
                    retried=int(w.get("retried", 0)),
                    success_rate=_ratio(w.get("success", 0), w.get("success", 0) + w.get("failed", 0)),
                    avg_duration_seconds=_ratio(w.get("dur_sum", 0.0), w.get("dur_n", 0)),
                ),
            )
        )
    return TasksResponse(generated_at=datetime.fromtimestamp(snap.taken_at, UTC), workers=snap.workers, tasks=tasks)


# -- the feature -------------------------------------------------------------------------------------------------------
class LiveFeed:
    """Store + broadcaster + collector + router of one exporter app."""

    def __init__(self, settings: Settings, store: StateStore) -> None:
        self.settings = settings
        self.store = store
        self.broadcaster: Broadcaster | None = None
        self.collector = StateCollector(store, lambda: len(self.broadcaster.clients) if self.broadcaster else 0)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        self._ensure_broadcaster()
        try:
            yield
        finally:
            if self.broadcaster is not None:
                await self.broadcaster.stop()
            await self.store.aclose()

    def _ensure_broadcaster(self) -> Broadcaster:
        if self.broadcaster is None:
            self.broadcaster = Broadcaster(self.store, self.settings.live_client_queue)
        self.broadcaster.start()
        return self.broadcaster

    # -- auth ------------------------------------------------------------------------------------------------------
    def _ws_authorized(self, ws: WebSocket) -> bool:
        token = self.settings.bearer_token
        if token is None:
            return True
        expected = token.get_secret_value().encode()
        scheme, _, value = ws.headers.get("authorization", "").partition(" ")
        candidate = value.strip() if scheme.lower() == "bearer" else ws.query_params.get("token", "")
        return secrets.compare_digest(candidate.encode(), expected)

    async def _known_tasks(self) -> set[str]:
        try:
            return await self.store.task_names()
        except Exception:
            raise _unavailable() from None

    # -- router ----------------------------------------------------------------------------------------------------
    def router(self, auth: Any) -> APIRouter:
        router = APIRouter()
        feed = self

        @router.get(
            "/api/v1/tasks",
            dependencies=[auth],
            response_model=TasksResponse,
            tags=["live"],
            summary="Health snapshot of every task type",
            description="Pending, oldest pending age, running, finished counts, success rate and average duration "
            "over the stats window (TASKIQ_MONITOR_STATS_WINDOW_SECONDS), for every known task type.",
            responses={503: {"description": "The state store (Redis) is unavailable."}},
        )
        async def get_tasks() -> TasksResponse:
            try:
                snap = await feed.store.snapshot(with_stats=True)
            except Exception:
                raise _unavailable() from None
            return tasks_response(snap, feed.settings.stats_window_seconds)

        @router.get(
            "/api/v1/events",
            dependencies=[auth],
            response_model=EventsPage,
            tags=["live"],
            summary="Recent task events, newest first, with cursor pagination",
            description="Events retained in the stream (TASKIQ_MONITOR_STREAM_MAX_EVENTS). Filters combine with AND; "
            "task_name and status are repeatable or comma-separated. since/until accept RFC 3339 or unix seconds "
            "and select by the time the event was recorded. Unknown filter values and malformed ids are rejected "
            "with 422.",
            responses={
                422: {"description": "Unknown filter value, malformed cursor, limit out of range."},
                503: {"description": "The state store (Redis) is unavailable."},
            },
        )
        async def get_events(
            task_name: list[str] | None = Query(None, description="Task type(s)."),
            status_: list[str] | None = Query(None, alias="status", description=f"One of {EVENT_STATUSES}."),
            since: datetime | None = Query(None, description="Oldest recording time (inclusive)."),
            until: datetime | None = Query(None, description="Newest recording time (inclusive)."),
            limit: int = Query(MAX_PAGE, ge=1, le=MAX_PAGE, description=f"Page size (at most {MAX_PAGE})."),
            cursor: str | None = Query(None, description="next_cursor of the previous page."),
        ) -> EventsPage:
            try:
                names, statuses = parse_filters(task_name, status_, await feed._known_tasks() if task_name else set())
                upper: tuple[int, int] | None = None
                if until is not None:
                    upper = (_epoch_ms(until, "until") + 1, 0)
                if cursor is not None:
                    key = parse_id(cursor, "cursor")
                    upper = key if upper is None else min(upper, key)
                lower = f"{_epoch_ms(since, 'since')}-0" if since is not None else "-"
            except InputError as exc:
                raise HTTPException(422, exc.message) from None
            probe = _Client(1, names, statuses)
            items: list[EventItem] = []
            scanned = 0
            last_seen: str | None = None
            exhausted = False
            try:
                while len(items) < limit and scanned < _MAX_SCAN:
                    if upper == (0, 0):  # nothing is older than the first possible id
                        exhausted = True
                        break
                    before = f"({format_event_id(upper)}" if upper is not None else "+"
                    chunk = await feed.store.range_desc(before, lower, _SCAN_CHUNK if names or statuses else limit)
                    if not chunk:
                        exhausted = True
                        break
                    for entry in chunk:
                        scanned += 1
                        last_seen = entry.id
                        upper = entry.key
                        if probe.wants(entry):
                            items.append(EventItem(id=entry.id, event=json.loads(entry.payload)))
                            if len(items) == limit:
                                break
            except Exception:
                raise _unavailable() from None
            if len(items) == limit:
                next_cursor: str | None = items[-1].id
            else:
                next_cursor = None if exhausted else last_seen
            return EventsPage(events=items, next_cursor=next_cursor)

        @router.websocket("/ws/events")
        async def ws_events(ws: WebSocket) -> None:
            await feed.serve_ws(ws)

        return router

    # -- WebSocket ---------------------------------------------------------------------------------------------------
    async def serve_ws(self, ws: WebSocket) -> None:
        await ws.accept()
        if not self._ws_authorized(ws):
            await self._fail(ws, CLOSE_UNAUTHORIZED, "unauthorized", "missing or invalid bearer token")
            return
        broadcaster = self._ensure_broadcaster()
        try:
            await asyncio.wait_for(broadcaster.ready.wait(), 5.0)
            query = ws.query_params
            wants_names = query.getlist("task_name")
            known = await self.store.task_names() if wants_names else set()
        except (TimeoutError, Exception):
            await self._fail(ws, CLOSE_UNAVAILABLE, "unavailable", "state store unavailable")
            return
        try:
            names, statuses = parse_filters(wants_names, query.getlist("status"), known)
            resume = query.get("last_event_id")
            resume_key = parse_id(resume, "last_event_id") if resume else None
        except InputError as exc:
            await self._fail(ws, CLOSE_BAD_REQUEST, exc.code, exc.message)
            return
        if resume_key is not None:
            try:
                last = await self.store.last_id()
            except Exception:
                logger.warning("taskiq-monitor live feed: cannot read the event stream", exc_info=True)
                await self._fail(ws, CLOSE_UNAVAILABLE, "unavailable", "state store unavailable")
                return
            if resume_key[0] > parse_event_id(last)[0] + _FUTURE_TOLERANCE_MS:
                await self._fail(
                    ws,
                    CLOSE_BAD_REQUEST,
                    "future_id",
                    f"last_event_id {format_event_id(resume_key)} is beyond the stream's last event {last} (another "
                    "or a reset Redis?); reconnect without last_event_id",
                )
                return
        client = _Client(self.settings.live_client_queue, names, statuses)
        live_from = broadcaster.register(client)
        client.sender = asyncio.create_task(self._send(ws, client, resume_key, live_from))
        receiver = asyncio.create_task(self._receive(ws, client))
        try:
            done, _ = await asyncio.wait({client.sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            if client.overflowed:
                await self._fail(
                    ws,
                    CLOSE_SLOW_CONSUMER,
                    "slow_consumer",
                    f"more than {self.settings.live_client_queue} events queued; reconnect with last_event_id",
                    wait=_SLOW_CLIENT_GRACE,
                )
            elif client.sender in done and not client.sender.cancelled() and client.sender.exception() is not None:
                failure = client.sender.exception()
                if not isinstance(failure, WebSocketDisconnect):
                    logger.warning("taskiq-monitor live feed: client failed", exc_info=failure)
                    await self._fail(ws, CLOSE_UNAVAILABLE, "unavailable", "state store unavailable")
        finally:
            broadcaster.unregister(client)
            for task in (client.sender, receiver):
                task.cancel()
            for task in (client.sender, receiver):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _fail(self, ws: WebSocket, code: int, error: str, message: str, wait: float = 2.0) -> None:
        # A slow consumer's socket is full: its error frame and close go out once it reads again (bounded wait;
        # after that the connection is dropped by the server).
        frame = json.dumps({"type": "error", "code": error, "message": message})
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.send_text(frame), wait)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ws.close(code, message[:120]), wait)

    async def _send(
        self, ws: WebSocket, client: _Client, resume: tuple[int, int] | None, live_from: tuple[int, int]
    ) -> None:
        sent = resume if resume is not None else live_from
        if resume is not None:
            # The backlog: (resume, live_from], in chunks; live entries after live_from wait in the queue. The stream
            # may be trimmed while the backlog is read: its first id is checked before every chunk.
            reported: tuple[int, int] | None = None
            while sent < live_from:
                first = await self.store.first_id()
                first_key = parse_event_id(first) if first is not None else None
                if first_key is not None and (0, 0) < sent < first_key and (reported is None or first_key > reported):
                    reported = first_key
                    await ws.send_text(
                        json.dumps(
                            {
                                "type": "gap",
                                "first_event_id": first,
                                "message": f"events after {format_event_id(sent)} up to {first} may have been "
                                "trimmed from the stream (retention: TASKIQ_MONITOR_STREAM_MAX_EVENTS)",
                            }
                        )
                    )
                chunk = await self.store.range_asc(format_event_id(sent), format_event_id(live_from), _SCAN_CHUNK)
                if not chunk:
                    break
                for entry in chunk:
                    if client.wants(entry):
                        await ws.send_text(event_frame(entry))
                    sent = entry.key
            sent = max(sent, live_from)
        await ws.send_text(json.dumps({"type": "live", "last_event_id": format_event_id(sent)}))
        ping = self.settings.live_ping_seconds
        queue = client.queue
        while True:
            try:
                key, frame = await asyncio.wait_for(queue.get(), ping)
            except TimeoutError:
                await ws.send_text(json.dumps({"type": "ping", "ts": time.time()}))
                continue
            while True:
                client.queued_bytes -= len(frame)
                if key > sent:  # exactly once: the backlog may overlap what was queued meanwhile
                    await ws.send_text(frame)
                    sent = key
                try:
                    key, frame = queue.get_nowait()
                except asyncio.QueueEmpty:
                    break

    async def _receive(self, ws: WebSocket, client: _Client) -> None:
        limit = self.settings.live_max_message_bytes
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text")
            size = len(raw.encode()) if raw is not None else len(message.get("bytes") or b"")
            if size > limit:
                await self._fail(ws, CLOSE_TOO_LARGE, "message_too_large", f"message of {size} bytes > {limit}")
                return
            reply = await self._handle(
                raw if raw is not None else (message.get("bytes") or b"").decode("utf-8", "replace"), client
            )
            if reply is not None:
                await ws.send_text(json.dumps(reply))

    async def _handle(self, raw: str, client: _Client) -> dict[str, Any] | None:
        try:
            data = json.loads(raw)
        except ValueError:
            return {"type": "error", "code": "invalid_json", "message": "messages must be JSON objects"}
        if not isinstance(data, dict):
            return {"type": "error", "code": "invalid_message", "message": "messages must be JSON objects"}
        kind = data.get("type")
        if kind == "ping":
            return {"type": "pong"}
        if kind == "filter":
            try:
                names_in, stats_in = data.get("task_name"), data.get("status")
                names_list = [names_in] if isinstance(names_in, str) else names_in
                stats_list = [stats_in] if isinstance(stats_in, str) else stats_in
                if not all(isinstance(v, list) or v is None for v in (names_list, stats_list)):
                    raise InputError("invalid_message", "task_name and status must be strings or lists of strings")
                known = await self.store.task_names() if names_list else set()
                names, statuses = parse_filters(
                    [str(v) for v in names_list or []], [str(v) for v in stats_list or []], known
                )
            except InputError as exc:
                return {"type": "error", "code": exc.code, "message": exc.message}
            client.task_names, client.statuses = names, statuses
            return {"type": "filter", "task_name": sorted(names or []), "status": sorted(statuses or [])}
        return {
            "type": "error",
            "code": "unknown_message_type",
            "message": f"unknown message type {kind!r}; use 'ping' or 'filter'",
        }


def _unavailable() -> HTTPException:
    # The cause is logged, never returned: Redis errors name hosts and ports.
    logger.warning("taskiq-monitor: state store unavailable", exc_info=True)
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "state store unavailable")


def _epoch_ms(moment: datetime, name: str) -> int:
    """Milliseconds since the epoch (stream ids count from it); earlier times are rejected."""
    try:
        ms = int(moment.timestamp() * 1000)
    except (OverflowError, OSError, ValueError):
        ms = -1
    if ms < 0:
        raise InputError("invalid_time", f"{name}: {moment.isoformat()} is before 1970-01-01T00:00:00Z")
    return ms


def include_live(app: FastAPI, settings: Settings, auth: Any, store: StateStore) -> LiveFeed:
    """Mount the live feed on ``app`` (the caller adds ``feed.collector`` to /metrics and ``feed.lifespan``)."""
    feed = LiveFeed(settings, store)
    app.include_router(feed.router(auth))
    app.description = (app.description or "") + "\n\n" + (__doc__ or "").split("WebSocket protocol", 1)[-1]
    return feed
