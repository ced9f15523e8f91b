"""The live feed: ``WebSocket /ws/events``, fanned out from one reader of the event stream per exporter.

WebSocket protocol (``/ws/events``)
-----------------------------------
Query parameters (all optional): ``v`` (protocol version, ``1`` or ``2``; default ``1``), ``task_name`` and
``status`` (repeatable or comma-separated; unknown values are rejected), ``last_event_id`` (resume: every retained
event after it is delivered first, in order, exactly once, then live events). Authenticate with
``Authorization: Bearer <token>`` or the session cookie (``?token=`` is still accepted and never logged).

Server frames (one JSON object per text frame)::

    {"type": "events", "v": 2, "events": [{"id": "1700000000000-0", "event": {...record...}}, ...]}
                                                     version 2: the events of one tick (oldest first)
    {"type": "event", "id": "1700000000000-0", "event": {...event record...}}
                                                     version 1 (deprecated): one frame per event
    {"type": "live", "last_event_id": "..."}         the backlog of a resume has been sent; live events follow
    {"type": "gap", "first_event_id": "...", "message": "..."}  events after the resume id were trimmed from the
                                                     stream (before or while the backlog is sent)
    {"type": "ping", "ts": 1700000000.0}             every live_ping_seconds while idle
    {"type": "pong"}                                 answer to a client ping
    {"type": "filter", "task_name": [...], "status": [...]}  the filters now in force
    {"type": "error", "code": "...", "message": "..."}

Client frames: ``{"type": "ping"}`` and ``{"type": "filter", "task_name": [...], "status": [...]}`` (replace the
filters). Any other message — not JSON, not an object, nested too deep — gets an ``error`` frame and the connection
stays open. A ``last_event_id`` beyond the stream's last id (from another Redis, or a flushed one) gets an error
frame with code ``future_id``. Close codes: 4400 invalid parameters, 4401 unauthorized, 1009 message too large,
1011 state store unavailable, 1013 slow consumer (the client fell more than ``live_client_queue`` events behind;
reconnect with ``last_event_id`` to continue without loss; also when more than 32 MiB of frames are queued for it).
A slow consumer gets an ``error`` frame with code ``slow_consumer`` and the close; if it does not read them within
15 s, its connection is aborted (a reset), so a client that stopped reading never holds the exporter's memory.

Why the fan-out looks like this (measured in ``benchmarks/bench_live.py``): sending one frame costs the exporter
~9 µs per client without compression and 50–330 µs with per-message deflate, so per-event frames saturate one
exporter at ~20k frames/s (100 clients × 200 events/s). Here each event is encoded once, clients with the same
filter share one group (the filter runs once per group, not per client), and a client gets one frame per tick
holding every event it is due — the same bytes, framed once, for the whole group. The tick grows with the number
of clients (50 µs each, at most ``live_batch_seconds``): a few viewers get events at once, a thousand get 20 frames
a second. Deflate is off at the server (``ws_per_message_deflate``): compressing per client is what made frames
expensive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketDisconnected

from taskiq_monitor.service.auth import websocket_authorized
from taskiq_monitor.service.query import InputError, matches, parse_filters, parse_id
from taskiq_monitor.service.transport import CONNECTION_EXTENSION, text_frame
from taskiq_monitor.settings import Settings
from taskiq_monitor.store import Entry, StateStore, format_event_id, parse_event_id

logger = logging.getLogger(__name__)

SCAN_CHUNK = 500
_READ_BLOCK_MS = 1000
SLOW_CLIENT_GRACE = 15.0  # seconds a cut-off client gets to read its error frame and close before the reset
# Frames queued per client are also bounded by size: live_client_queue events of up to event_max_record_bytes each
# (64 KiB by default) could otherwise hold hundreds of MiB per slow client. 32 MiB is ~100 000 typical events.
CLIENT_QUEUE_BYTES = 32 * 1024 * 1024
# One v2 frame holds at most this much (more events are split over several frames): under the 1 MiB default
# max_size of the websockets library and of most clients.
MAX_FRAME_BYTES = 512 * 1024
# Pacing of the reader: after a read, the next waits at least this long per connected client (at most
# live_batch_seconds). The exporter then sends at most ~20,000 frames a second in all, whatever the number of
# clients (a frame costs it ~10–25 µs), and a few clients still get each event within a millisecond or so.
TICK_PER_CLIENT = 50e-6
# A resume id at most this far (ms) beyond the stream's last id is accepted (an event written meanwhile).
_FUTURE_TOLERANCE_MS = 60_000
PROTOCOL_VERSIONS = ("1", "2")

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_LARGE = 1009
CLOSE_UNAVAILABLE = 1011
CLOSE_SLOW_CONSUMER = 1013

_DISCONNECTED = (WebSocketDisconnect, WebSocketDisconnected)

FilterKey = tuple[frozenset[str] | None, frozenset[str] | None]


# -- frames --------------------------------------------------------------------------------------------------------
def event_item(entry: Entry) -> str:
    """``{"id": ..., "event": {...}}``: the record is stored as JSON and embedded as is (never re-encoded)."""
    return f'{{"id":"{entry.id}","event":{entry.payload}}}'


def event_frame(entry: Entry) -> str:
    """The version 1 frame of one event."""
    return f'{{"type":"event","id":"{entry.id}","event":{entry.payload}}}'


def batch_frames(items: list[str]) -> list[str]:
    """Version 2 frames for ``items`` (encoded :func:`event_item`), split at ``MAX_FRAME_BYTES``."""
    frames: list[str] = []
    start, size = 0, 0
    for i, item in enumerate(items):
        if size and size + len(item) > MAX_FRAME_BYTES:
            frames.append('{"type":"events","v":2,"events":[' + ",".join(items[start:i]) + "]}")
            start, size = i, 0
        size += len(item) + 1
    if start < len(items):
        frames.append('{"type":"events","v":2,"events":[' + ",".join(items[start:]) + "]}")
    return frames


@dataclass(slots=True)
class Batch:
    """The events of one tick that one filter group is due: encoded once, shared by all the group's clients."""

    keys: list[tuple[int, int]]
    items: list[str]  # version 2 items
    singles: list[str]  # version 1 frames, one per event
    nbytes: int
    _frames: list[str] | None = None
    _wire: list[bytes] | None = None

    @property
    def frames(self) -> list[str]:
        if self._frames is None:  # built once, on first use, for every v2 client of the group
            self._frames = batch_frames(self.items)
        return self._frames

    @property
    def wire(self) -> list[bytes]:
        """The v2 frames as WebSocket frames on the wire (built once for the group)."""
        if self._wire is None:
            self._wire = [text_frame(frame.encode()) for frame in self.frames]
        return self._wire


class Client:
    """One WebSocket client: its filter, protocol version and a bounded queue of batches."""

    __slots__ = (
        "dropped",
        "group",
        "max_bytes",
        "overflowed",
        "pending",
        "queue",
        "queued_bytes",
        "queued_events",
        "size",
        "statuses",
        "task_names",
        "version",
        "wake",
    )

    def __init__(
        self,
        size: int,
        task_names: frozenset[str] | None,
        statuses: frozenset[str] | None,
        max_bytes: int = CLIENT_QUEUE_BYTES,
        version: int = 2,
    ) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.task_names = task_names
        self.statuses = statuses
        self.version = version
        self.queue: deque[Batch] = deque()
        self.queued_bytes = 0
        self.queued_events = 0
        self.overflowed = False
        self.wake = asyncio.Event()
        # Set when cut off: the connection's handler waits on it, as the sender may be blocked on a full socket.
        self.dropped = asyncio.Event()
        self.group: FilterKey | None = None

    @property
    def filter_key(self) -> FilterKey:
        return self.task_names, self.statuses

    def wants(self, entry: Entry) -> bool:
        return matches(self.task_names, self.statuses, entry.task_name, entry.status)

    def offer(self, batch: Batch) -> bool:
        """Queue ``batch``; False (and nothing queued) when that would exceed the client's bounds."""
        if self.queued_events + len(batch.keys) > self.size or self.queued_bytes + batch.nbytes > self.max_bytes:
            self.overflowed = True
            self.wake.set()
            self.dropped.set()
            return False
        self.queue.append(batch)
        self.queued_events += len(batch.keys)
        self.queued_bytes += batch.nbytes
        self.wake.set()
        return True

    def take(self) -> list[Batch]:
        batches = list(self.queue)
        self.queue.clear()
        self.queued_events = 0
        self.queued_bytes = 0
        self.wake.clear()
        return batches


class Broadcaster:
    """One reader of the stream per exporter; hands each tick's events to every client's bounded queue without
    waiting. Clients are grouped by filter: the filter runs once per group and event, the batch is built once per
    group and tick.

    A client whose queue would exceed ``live_client_queue`` events or ``CLIENT_QUEUE_BYTES`` is cut off (marked
    ``overflowed`` and woken, so its connection closes with 1013); the others never wait for it.
    """

    def __init__(self, store: StateStore, queue_size: int, tick: float = 0.0) -> None:
        self.store = store
        self.queue_size = queue_size
        self.tick = tick
        self.groups: dict[FilterKey, set[Client]] = {}
        self.last_key: tuple[int, int] = (0, 0)
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Entries are dispatched a read at a time; a client that keeps up must never overflow within one read.
        self.chunk = max(1, min(SCAN_CHUNK, queue_size // 4))

    @property
    def clients(self) -> set[Client]:
        return {client for group in self.groups.values() for client in group}

    def client_count(self) -> int:
        return sum(len(group) for group in self.groups.values())

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="taskiq-monitor-live-reader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def register(self, client: Client) -> tuple[int, int]:
        """Add a client; every entry after the returned id will be offered to it."""
        self._join(client)
        return self.last_key

    def refilter(self, client: Client, task_names: frozenset[str] | None, statuses: frozenset[str] | None) -> None:
        self.unregister(client)
        client.task_names, client.statuses = task_names, statuses
        if not client.overflowed:
            self._join(client)

    def _join(self, client: Client) -> None:
        client.group = client.filter_key
        self.groups.setdefault(client.group, set()).add(client)

    def unregister(self, client: Client) -> None:
        if client.group is None:
            return
        group = self.groups.get(client.group)
        if group is not None:
            group.discard(client)
            if not group:
                del self.groups[client.group]
        client.group = None

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
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
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
            if len(entries) < self.chunk:
                # Caught up: wait for the rest of the tick, so the next read collects a batch instead of one event
                # (a blocking read returns at the first event; that one is sent at once).
                tick = min(self.tick, self.client_count() * TICK_PER_CLIENT)
                rest = tick - (loop.time() - started)
                if rest > 0:
                    await asyncio.sleep(rest)

    def dispatch(self, entries: list[Entry]) -> None:
        if not entries:
            return
        self.last_key = entries[-1].key
        if not self.groups:
            return
        keys = [entry.key for entry in entries]
        items = [event_item(entry) for entry in entries]
        everything: Batch | None = None
        for (names, statuses), group in list(self.groups.items()):
            if names is None and statuses is None:
                if everything is None:
                    nbytes = sum(len(item) for item in items)
                    everything = Batch(keys, items, [_single(item) for item in items], nbytes)
                batch: Batch | None = everything
            else:
                batch = _select(entries, keys, items, names, statuses)
            if batch is None:
                continue
            for client in list(group):
                if not client.offer(batch):
                    self.unregister(client)


def _single(item: str) -> str:
    # '{"id":...}' -> '{"type":"event","id":...}': the v1 frame from the v2 item, without re-encoding.
    return '{"type":"event",' + item[1:]


def _select(
    entries: list[Entry],
    keys: list[tuple[int, int]],
    items: list[str],
    names: frozenset[str] | None,
    statuses: frozenset[str] | None,
) -> Batch | None:
    picked = [i for i, entry in enumerate(entries) if matches(names, statuses, entry.task_name, entry.status)]
    if not picked:
        return None
    chosen = [items[i] for i in picked]
    return Batch([keys[i] for i in picked], chosen, [_single(item) for item in chosen], sum(map(len, chosen)))


# -- the feature -----------------------------------------------------------------------------------------------------
class LiveFeed:
    """Store + broadcaster + the WebSocket route of one exporter app."""

    def __init__(self, settings: Settings, store: StateStore) -> None:
        self.settings = settings
        self.store = store
        self.broadcaster: Broadcaster | None = None
        self._pinger: asyncio.Task[None] | None = None

    def client_count(self) -> int:
        return self.broadcaster.client_count() if self.broadcaster is not None else 0

    def ensure_broadcaster(self) -> Broadcaster:
        if self.broadcaster is None:
            self.broadcaster = Broadcaster(
                self.store, self.settings.live_client_queue, self.settings.live_batch_seconds
            )
        self.broadcaster.start()
        return self.broadcaster

    async def stop(self) -> None:
        if self.broadcaster is not None:
            await self.broadcaster.stop()

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.websocket("/ws/events")
        async def ws_events(ws: WebSocket) -> None:
            await self.serve_ws(ws)

        return router

    # -- one connection --------------------------------------------------------------------------------------------
    async def serve_ws(self, ws: WebSocket) -> None:
        await ws.accept()
        if not websocket_authorized(self.settings, ws):
            await self._fail(ws, CLOSE_UNAUTHORIZED, "unauthorized", "missing or invalid bearer token")
            return
        query = ws.query_params
        version = query.get("v", "1")
        if version not in PROTOCOL_VERSIONS:
            await self._fail(
                ws, CLOSE_BAD_REQUEST, "unsupported_version", f"unsupported protocol version {version!r}; use 1 or 2"
            )
            return
        broadcaster = self.ensure_broadcaster()
        try:
            await asyncio.wait_for(broadcaster.ready.wait(), 5.0)
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
        client = Client(self.settings.live_client_queue, names, statuses, version=int(version))
        live_from = broadcaster.register(client)
        sender = asyncio.create_task(self._send(ws, client, resume_key, live_from))
        receiver = asyncio.create_task(self._receive(ws, client))
        dropped = asyncio.create_task(client.dropped.wait())
        try:
            done, _ = await asyncio.wait({sender, receiver, dropped}, return_when=asyncio.FIRST_COMPLETED)
            if client.overflowed:
                sender.cancel()
                await self._fail(
                    ws,
                    CLOSE_SLOW_CONSUMER,
                    "slow_consumer",
                    f"more than {client.size} events queued; reconnect with last_event_id",
                    wait=SLOW_CLIENT_GRACE,
                    abort=True,
                )
            elif sender in done and not sender.cancelled() and sender.exception() is not None:
                failure = sender.exception()
                # After a close (message too large, or the client's own), sends raise Starlette's
                # WebSocketDisconnected: that is the end of the connection, not a store failure.
                if not isinstance(failure, _DISCONNECTED) and not receiver.done():
                    logger.warning("taskiq-monitor live feed: client failed", exc_info=failure)
                    await self._fail(ws, CLOSE_UNAVAILABLE, "unavailable", "state store unavailable")
        finally:
            broadcaster.unregister(client)
            for task in (sender, receiver, dropped):
                task.cancel()
            for task in (sender, receiver, dropped):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _fail(
        self, ws: WebSocket, code: int, error: str, message: str, wait: float = 2.0, abort: bool = False
    ) -> None:
        """Send an error frame and close. A slow consumer's socket is full: both go out once it reads again, within
        ``wait`` seconds in all; after that its transport is aborted (``abort``), or it would stay open, holding
        every byte queued for it, until the client reads."""
        frame = json.dumps({"type": "error", "code": error, "message": message})

        async def error_and_close() -> None:
            with contextlib.suppress(*_DISCONNECTED, OSError, RuntimeError):
                await ws.send_text(frame)
                await ws.close(code, message[:120])

        try:
            await asyncio.wait_for(error_and_close(), wait)
        except TimeoutError:
            if abort and abort_connection(ws):
                logger.info("taskiq-monitor live feed: aborted a client that read nothing for %.0f s", wait)

    async def _send(
        self, ws: WebSocket, client: Client, resume: tuple[int, int] | None, live_from: tuple[int, int]
    ) -> None:
        sent = resume if resume is not None else live_from
        if resume is not None:
            sent = await self._send_backlog(ws, client, resume, live_from)
        await ws.send_text(json.dumps({"type": "live", "last_event_id": format_event_id(sent)}))
        ping = self.settings.live_ping_seconds
        write = _raw_writer(ws) if client.version == 2 else None
        while True:
            if not client.queue and not client.overflowed:
                try:
                    await asyncio.wait_for(client.wake.wait(), ping)
                except TimeoutError:
                    await ws.send_text(json.dumps({"type": "ping", "ts": time.time()}))
                    continue
            if client.overflowed:
                return
            for batch in client.take():
                if batch.keys[-1] <= sent:  # exactly once: the backlog may overlap what was queued meanwhile
                    continue
                if batch.keys[0] > sent and write is not None:
                    for wire in batch.wire:
                        await write(wire)
                    sent = batch.keys[-1]
                    continue
                if batch.keys[0] > sent:
                    frames = batch.frames if client.version == 2 else batch.singles
                else:
                    fresh = [i for i, key in enumerate(batch.keys) if key > sent]
                    frames = (
                        batch_frames([batch.items[i] for i in fresh])
                        if client.version == 2
                        else [batch.singles[i] for i in fresh]
                    )
                for frame in frames:
                    await ws.send_text(frame)
                sent = batch.keys[-1]

    async def _send_backlog(
        self, ws: WebSocket, client: Client, resume: tuple[int, int], live_from: tuple[int, int]
    ) -> tuple[int, int]:
        # The backlog: (resume, live_from], in chunks; live entries after live_from wait in the queue. The stream
        # may be trimmed while the backlog is read: its first id is checked before every chunk.
        sent = resume
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
            chunk = await self.store.range_asc(format_event_id(sent), format_event_id(live_from), SCAN_CHUNK)
            if not chunk:
                break
            wanted = [entry for entry in chunk if client.wants(entry)]
            if client.version == 2:
                for frame in batch_frames([event_item(entry) for entry in wanted]):
                    await ws.send_text(frame)
            else:
                for entry in wanted:
                    await ws.send_text(event_frame(entry))
            sent = chunk[-1].key
        return max(sent, live_from)

    async def _receive(self, ws: WebSocket, client: Client) -> None:
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
            text = raw if raw is not None else (message.get("bytes") or b"").decode("utf-8", "replace")
            try:
                reply = await self.handle(text, client)
            except Exception:
                # A bug in a handler must cost the client an error frame, not its connection.
                logger.warning("taskiq-monitor live feed: cannot handle a client message", exc_info=True)
                reply = {"type": "error", "code": "internal_error", "message": "the message could not be handled"}
            await ws.send_text(json.dumps(reply))

    async def handle(self, raw: str, client: Client) -> dict[str, Any]:
        """The reply to one client message (never raises on any input; store failures become error frames)."""
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            # RecursionError: deeply nested brackets (a 4 KiB message can nest 2,000 deep).
            return {"type": "error", "code": "invalid_json", "message": "messages must be JSON objects"}
        if not isinstance(data, dict):
            return {"type": "error", "code": "invalid_message", "message": "messages must be JSON objects"}
        kind = data.get("type")
        if kind == "ping":
            return {"type": "pong"}
        if kind == "filter":
            try:
                names_list = _strings(data.get("task_name"))
                stats_list = _strings(data.get("status"))
                try:
                    known = await self.store.task_names() if names_list else set()
                except Exception:
                    logger.warning("taskiq-monitor live feed: state store unavailable", exc_info=True)
                    raise InputError("unavailable", "state store unavailable") from None
                names, statuses = parse_filters(names_list, stats_list, known)
            except InputError as exc:
                return {"type": "error", "code": exc.code, "message": exc.message}
            if self.broadcaster is not None:
                self.broadcaster.refilter(client, names, statuses)
            else:
                client.task_names, client.statuses = names, statuses
            return {"type": "filter", "task_name": sorted(names or []), "status": sorted(statuses or [])}
        return {
            "type": "error",
            "code": "unknown_message_type",
            "message": f"unknown message type {_short(kind)}; use 'ping' or 'filter'",
        }


def _strings(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise InputError("invalid_message", "task_name and status must be strings or lists of strings")


def _short(kind: Any) -> str:
    # The type is echoed back: only a short scalar, never a structure (repr of a deep one recurses).
    return repr(kind)[:60] if isinstance(kind, str | int | float | bool) or kind is None else "(not a string)"


def _raw_writer(ws: WebSocket) -> Callable[[bytes], Awaitable[None]] | None:
    """The server's ``write(frame_bytes)`` (see ``service/transport.py``), or None under other servers."""
    extension = ws.scope.get("extensions", {}).get(CONNECTION_EXTENSION)
    write = extension.get("write") if isinstance(extension, dict) else None
    return write if callable(write) else None


def abort_connection(ws: WebSocket) -> bool:
    """Reset the connection under ``ws`` when the server offers the abort extension (the exporter's own server
    does, see ``service/transport.py``; under other servers only the close is sent); True when it was aborted."""
    extension = ws.scope.get("extensions", {}).get(CONNECTION_EXTENSION)
    if not isinstance(extension, dict) or not callable(extension.get("abort")):
        return False
    extension["abort"]()
    return True
