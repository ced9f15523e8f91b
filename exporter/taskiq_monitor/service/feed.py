"""The live feed: ``WebSocket /ws/events``, fanned out from one reader of the event stream per exporter.

This module is the protocol and one connection's handler. How events reach the clients (one reader of the
stream, clients grouped by filter, one frame per tick, a bounded queue per client) and the measurements behind
it: ``service/broadcast.py``; the frames, encoded once: ``service/frames.py``.

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
frame with code ``future_id``.

A handshake with an ``Origin`` header (every browser sends one) is refused with HTTP 403 unless the origin's
host[:port] is the request's ``Host`` (the exporter's own page) or its host name is listed in
``TASKIQ_MONITOR_ALLOWED_HOSTS``; clients that send no ``Origin`` (``taskiq-monitor tail``, scripts) are not
affected. So is one whose ``Host`` is not a name of the exporter (``service/hosts.py``).

Close codes (with a reason of at most 123 bytes of UTF-8): 4400 invalid parameters, 4401 unauthorized, 1009
message too large, 1011 state store unavailable, 1013 slow consumer (the client fell more than ``live_client_queue``
events behind; reconnect with ``last_event_id`` to continue without loss; also when more than 32 MiB of frames are
queued for it).
A slow consumer gets an ``error`` frame with code ``slow_consumer`` and the close; if it does not read them within
15 s, its connection is aborted (a reset), so a client that stopped reading never holds the exporter's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketDisconnected

from taskiq_monitor.logs import Outage, redis_target
from taskiq_monitor.service.auth import websocket_authorized
from taskiq_monitor.service.broadcast import SCAN_CHUNK, Broadcaster, Client
from taskiq_monitor.service.frames import Batch, batch_frames, event_frame, event_item
from taskiq_monitor.service.hosts import origin_allowed
from taskiq_monitor.service.query import InputError, parse_filters, parse_id
from taskiq_monitor.service.transport import CONNECTION_EXTENSION
from taskiq_monitor.settings import Settings
from taskiq_monitor.store import StateStore, format_event_id, parse_event_id

logger = logging.getLogger(__name__)

SLOW_CLIENT_GRACE = 15.0  # seconds a cut-off client gets to read its error frame and close before the reset
# A resume id at most this far (ms) beyond the stream's last id is accepted (an event written meanwhile).
_FUTURE_TOLERANCE_MS = 60_000
PROTOCOL_VERSIONS = ("1", "2")

CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_TOO_LARGE = 1009
CLOSE_UNAVAILABLE = 1011
CLOSE_SLOW_CONSUMER = 1013
CLOSE_FORBIDDEN_ORIGIN = 1008  # sent before accept: the client sees HTTP 403, never this code
# A close frame's payload is at most 125 bytes (RFC 6455 §5.5), 2 of them the code; a longer reason made the
# server log a ProtocolError and drop the connection without any close code.
MAX_CLOSE_REASON_BYTES = 123

_DISCONNECTED = (WebSocketDisconnect, WebSocketDisconnected)


class LiveFeed:
    """Store + broadcaster + the WebSocket route of one exporter app."""

    def __init__(self, settings: Settings, store: StateStore) -> None:
        self.settings = settings
        self.store = store
        self.broadcaster: Broadcaster | None = None
        # The feed's view of a store outage, shared by the reader and each connection's own reads: one warning when
        # it begins, one info line when the reader's next good read ends it.
        self.outage = Outage(logger, "taskiq-monitor live feed", redis_target(settings.redis_url))
        self._pinger: asyncio.Task[None] | None = None

    def client_count(self) -> int:
        return self.broadcaster.client_count() if self.broadcaster is not None else 0

    def ensure_broadcaster(self) -> Broadcaster:
        if self.broadcaster is None:
            self.broadcaster = Broadcaster(
                self.store,
                self.settings.live_client_queue,
                self.settings.live_batch_seconds,
                outage=self.outage,
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
        if not origin_allowed(self.settings.allowed_hosts, ws.headers.get("origin"), ws.headers.get("host")):
            # A page of another origin (cross-site WebSocket hijacking): refused before the handshake completes,
            # so the server answers HTTP 403 and the page learns nothing (see service/hosts.py).
            logger.info("taskiq-monitor live feed: refused a handshake from origin %r", ws.headers["origin"][:100])
            await ws.close(CLOSE_FORBIDDEN_ORIGIN)
            return
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
            except Exception as exc:
                self.outage.failed(exc)  # the reader's next good read reports the recovery
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
            elif client.unavailable:
                # The broadcaster lost the store (service/broadcast.py): close, so the client reconnects with
                # last_event_id and resumes without loss once Redis is back.
                sender.cancel()
                await self._fail(ws, CLOSE_UNAVAILABLE, "unavailable", "state store unavailable")
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
                await ws.close(code, close_reason(message))

        try:
            await asyncio.wait_for(error_and_close(), wait)
        except TimeoutError:
            if abort and abort_connection(ws):
                logger.info("taskiq-monitor live feed: aborted a client that read nothing for %.0f s", wait)

    async def _send(
        self, ws: WebSocket, client: Client, resume: tuple[int, int] | None, live_from: tuple[int, int]
    ) -> None:
        client.sent = resume if resume is not None else live_from
        if resume is not None:
            client.sent = await self._send_backlog(ws, client, resume, live_from)
        await ws.send_text(json.dumps({"type": "live", "last_event_id": format_event_id(client.sent)}))
        ping = self.settings.live_ping_seconds
        write = _raw_writer(ws)
        write_now = _raw_now_writer(ws)
        deflate = _extension(ws, "deflate")
        deflated = callable(deflate) and deflate() is True

        def wire(batch: Batch) -> bytes:
            return batch.wire(client.version, deflated)

        def direct(batch: Batch) -> bool:
            # Called by the broadcaster while this sender is idle: frames go out in the order they were read.
            if batch.keys[0] <= client.sent or write_now is None or not write_now(wire(batch)):
                return False
            client.sent = batch.keys[-1]
            return True

        while True:
            if not client.queue and not client.overflowed:
                client.direct = direct if write_now is not None else None
                try:
                    await asyncio.wait_for(client.wake.wait(), ping)
                except TimeoutError:
                    client.direct = None
                    await ws.send_text(json.dumps({"type": "ping", "ts": time.time()}))
                    continue
                finally:
                    client.direct = None
            if client.overflowed:
                return
            for batch in client.take():
                sent = client.sent
                if batch.keys[-1] <= sent:  # exactly once: the backlog may overlap what was queued meanwhile
                    continue
                if batch.keys[0] > sent and write is not None:
                    await write(wire(batch))
                    client.sent = batch.keys[-1]
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
                client.sent = batch.keys[-1]

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
                except Exception as exc:
                    self.outage.failed(exc)
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


def close_reason(message: str) -> str:
    """``message`` cut to :data:`MAX_CLOSE_REASON_BYTES` of UTF-8, at a character boundary."""
    data = message.encode("utf-8", "replace")
    return data[:MAX_CLOSE_REASON_BYTES].decode("utf-8", "ignore")  # "ignore": only a cut character's bytes


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
    write = _extension(ws, "write")
    return write if callable(write) else None


def _raw_now_writer(ws: WebSocket) -> Callable[[bytes], bool] | None:
    """The server's ``write_now(frames)`` (see ``service/transport.py``), or None under other servers."""
    write_now = _extension(ws, "write_now")
    return write_now if callable(write_now) else None


def _extension(ws: WebSocket, name: str) -> Any:
    extension = ws.scope.get("extensions", {}).get(CONNECTION_EXTENSION)
    return extension.get(name) if isinstance(extension, dict) else None


def abort_connection(ws: WebSocket) -> bool:
    """Reset the connection under ``ws`` when the server offers the abort extension (the exporter's own server
    does, see ``service/transport.py``; under other servers only the close is sent); True when it was aborted."""
    extension = ws.scope.get("extensions", {}).get(CONNECTION_EXTENSION)
    if not isinstance(extension, dict) or not callable(extension.get("abort")):
        return False
    extension["abort"]()
    return True
