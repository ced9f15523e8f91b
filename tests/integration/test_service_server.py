"""The exporter's server below the ASGI line, on a real uvicorn: TCP_NODELAY on kept-alive connections, slow
WebSocket clients aborted, tokens kept out of every log line, and two exporters serving one stream together."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import secrets
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import uvicorn
from websockets.asyncio.client import connect

from taskiq_monitor.service import feed as feed_module
from taskiq_monitor.service.app import create_app
from taskiq_monitor.service.transport import listening_socket, uvicorn_options
from taskiq_monitor.settings import Settings
from tests.integration.servers import RedisServer
from tests.integration.test_live_api import emit_events, event


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # pytest owns the signals
        yield


@contextlib.asynccontextmanager
async def serve(
    settings: Settings, compress: bool = False, port: int = 0, **config: Any
) -> AsyncIterator[tuple[_Server, int, Any]]:
    """The exporter app on a socket of its own (as ``taskiq-monitor worker`` serves it), in this event loop; on
    ``port`` when given (an exporter restarted on its address)."""
    sock = listening_socket("127.0.0.1", port)
    port = int(sock.getsockname()[1])
    app = create_app(settings)
    options = {"log_level": "warning", "access_log": False, "lifespan": "on", **config}
    server = _Server(uvicorn.Config(app, **uvicorn_options(compress), **options))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    deadline = time.monotonic() + 30
    while not server.started:
        assert not task.done() and time.monotonic() < deadline, "server did not start"
        await asyncio.sleep(0.02)
    try:
        yield server, port, app
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)


def _kept_alive_requests(port: int, n: int) -> tuple[list[float], int]:
    """``n`` GET /healthz on one connection; returns their durations and TCP_NODELAY of the client side."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    durations: list[float] = []
    try:
        for _ in range(n):
            start = time.perf_counter()
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            assert response.status == 200
            response.read()
            durations.append(time.perf_counter() - start)
        return durations, len({id(conn.sock)})
    finally:
        conn.close()


async def test_kept_alive_connections_have_tcp_nodelay_and_no_delayed_ack_stall() -> None:
    async with serve(Settings()) as (server, port, _app):
        conn = await asyncio.to_thread(http.client.HTTPConnection, "127.0.0.1", port, timeout=10)
        await asyncio.to_thread(conn.request, "GET", "/healthz")
        (await asyncio.to_thread(conn.getresponse)).read()
        options = [
            p.transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            for p in server.server_state.connections
        ]
        conn.close()
        assert options and all(options), options  # every accepted connection
        # Without it every kept-alive request after the first waited ~40 ms for the client's delayed ACK. The
        # minimum of 20 is robust to a loaded machine (one quick request suffices) and far below the stall.
        durations, connections = await asyncio.to_thread(_kept_alive_requests, port, 21)
        assert connections == 1
        assert min(durations[1:]) < 0.030, [round(d * 1000, 1) for d in durations]


@pytest.mark.parametrize("version", ["1", "2"])
async def test_slow_websocket_client_that_never_reads_is_aborted(
    redis_srv: RedisServer, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    monkeypatch.setattr(feed_module, "SLOW_CLIENT_GRACE", 1.0)
    settings = Settings(redis_url=redis_srv.url, live_client_queue=50)
    async with serve(settings) as (server, port, app):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", port))
        sock.setblocking(False)
        # No keepalive pings from the client: their timeout would make it drop the connection itself.
        url = f"ws://127.0.0.1:{port}/ws/events?v={version}"
        async with connect(url, sock=sock, max_queue=1, ping_interval=None) as slow:
            assert json.loads(await asyncio.wait_for(slow.recv(), 10))["type"] == "live"
            assert len(server.server_state.connections) == 1
            blob = secrets.token_urlsafe(4096)
            # More than the kernel buffers hold, so the close frame cannot be written while the client sleeps.
            sink = await asyncio.to_thread(
                emit_events, redis_srv.url, [event(i, kwargs={"blob": blob}) for i in range(3000)]
            )
            sink.stop()
            deadline = time.monotonic() + 30
            # Before: the connection stayed open, with megabytes queued, until the client read (minutes).
            while server.server_state.connections:
                assert time.monotonic() < deadline, "the slow client's connection is still open"
                await asyncio.sleep(0.1)
            assert app.state.live.client_count() == 0


async def test_message_too_large_closes_with_1009_and_logs_no_failure(
    redis_srv: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # Pings every 10 ms: the sender writes right after the close, which raised Starlette's WebSocketDisconnected,
    # was logged as a failure with a traceback, and answered with "state store unavailable".
    settings = Settings(redis_url=redis_srv.url, live_ping_seconds=0.01)
    caplog.set_level(logging.INFO, logger="taskiq_monitor")
    async with serve(settings) as (_server, port, _app):
        for _ in range(3):
            async with connect(f"ws://127.0.0.1:{port}/ws/events") as ws:
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "live"
                await ws.send("x" * 10_000)
                frames: list[dict[str, Any]] = []
                with pytest.raises(Exception) as closed:
                    while True:
                        frames.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
                assert getattr(closed.value, "rcvd", None) is not None and closed.value.rcvd.code == 1009  # type: ignore[attr-defined]
                errors = [f for f in frames if f["type"] == "error"]
                assert [f["code"] for f in errors] == ["message_too_large"]
            await asyncio.sleep(0.2)
    failures = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("taskiq_monitor")]
    assert failures == [], [r.getMessage() for r in failures]


async def test_malformed_messages_get_error_frames_and_the_connection_stays(redis_srv: RedisServer) -> None:
    settings = Settings(redis_url=redis_srv.url)
    async with serve(settings) as (_server, port, _app), connect(f"ws://127.0.0.1:{port}/ws/events?v=2") as ws:
        assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "live"
        # 2,000 nested brackets in 4 KB: RecursionError killed the connection (1006) before.
        for message, code in [
            ("[" * 2000 + "]" * 2000, "invalid_json"),
            ('{"type": "filter", "status": ' + "[" * 100 + "]" * 100 + "}", "invalid_message"),
            ('{"type": ["x"]}', "unknown_message_type"),
            ("\udcff", "invalid_json"),
        ]:
            await ws.send(message.encode("utf-8", "surrogatepass") if "\udcff" in message else message)
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert frame["type"] == "error" and frame["code"] == code, (message[:40], frame)
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"type": "pong"}


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


async def test_token_in_the_url_never_reaches_a_log_line(redis_srv: RedisServer) -> None:
    token = "tok-" + secrets.token_hex(8)
    handler = _Lines()
    loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.error", "uvicorn.access")]
    for target in loggers:
        target.addHandler(handler)
    try:
        settings = Settings(redis_url=redis_srv.url, bearer_token=token)
        async with serve(settings, log_level="debug", access_log=True, log_config=None) as (_s, port, _app):
            for target in loggers:
                target.setLevel(logging.DEBUG)
            async with connect(f"ws://127.0.0.1:{port}/ws/events?v=2&token={token}") as ws:
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "live"
            async with connect(f"ws://127.0.0.1:{port}/ws/events?token=wrong-{token}") as ws:
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["code"] == "unauthorized"
            status, _ = await asyncio.to_thread(_get, port, f"/api/v1/tasks?token={token}&x=1")
            assert status == 401  # a query token is no credential for the REST API
    finally:
        for target in loggers:
            target.removeHandler(handler)
    assert any("/ws/events" in line for line in handler.lines), handler.lines  # the lines were logged...
    assert any("/api/v1/tasks" in line for line in handler.lines), handler.lines
    assert not [line for line in handler.lines if token in line]  # ...without the token
    assert any("token=[redacted]" in line for line in handler.lines)


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


async def test_two_exporters_serve_the_same_stream_to_their_clients(redis_srv: RedisServer) -> None:
    settings = Settings(redis_url=redis_srv.url)
    async with serve(settings) as (_s1, port1, _a1), serve(settings) as (_s2, port2, _a2):
        clients = [await connect(f"ws://127.0.0.1:{p}/ws/events?v=2") for p in (port1, port2, port1, port2)]
        try:
            for ws in clients:
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "live"
            (await asyncio.to_thread(emit_events, redis_srv.url, [event(i) for i in range(500)])).stop()
            for ws in clients:
                ids: list[str] = []
                while len(ids) < 500:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
                    if frame["type"] == "events":
                        assert frame["v"] == 2
                        ids += [item["event"]["task_id"] for item in frame["events"]]
                assert ids == [f"id{i}" for i in range(500)]
        finally:
            for ws in clients:
                await ws.close()


@pytest.mark.parametrize("version", [1, 2])
async def test_compressed_batches_interleave_with_the_librarys_frames_and_plain_clients_get_plain_ones(
    redis_srv: RedisServer, version: int
) -> None:
    # Batches are compressed once per group and written as prepared bytes between frames the websockets library
    # compresses itself (live, filter and pong replies): only valid if neither side's stream depends on the other.
    settings = Settings(redis_url=redis_srv.url, live_compression=True)
    n = 600
    blob = "abc" * 500  # compressible: a batch shrinks well below its plain size
    async with serve(settings, compress=True) as (_server, port, _app):
        url = f"ws://127.0.0.1:{port}/ws/events?v={version}"
        deflating = await connect(url)  # the websockets client offers permessage-deflate, as browsers do
        plain = await connect(url, compression=None)
        try:
            negotiated = deflating.response.headers.get("Sec-WebSocket-Extensions") if deflating.response else None
            assert negotiated is not None and "permessage-deflate" in negotiated
            assert "server_no_context_takeover" in negotiated
            assert plain.response is not None and "Sec-WebSocket-Extensions" not in plain.response.headers
            # What arrives on the wire: (compressed?, bytes) of every data frame the deflating client decodes.
            wire: list[tuple[bool, int]] = []
            extension = deflating.protocol.extensions[0]
            decode = extension.decode

            def recording_decode(frame: Any, *, max_size: int | None = None) -> Any:
                wire.append((frame.rsv1, len(frame.data)))
                return decode(frame, max_size=max_size)

            extension.decode = recording_decode  # type: ignore[method-assign]
            for ws in (deflating, plain):
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "live"
            producer = asyncio.create_task(
                asyncio.to_thread(emit_events, redis_srv.url, [event(i, kwargs={"blob": blob}) for i in range(n)])
            )
            got: dict[str, list[str]] = {"deflating": [], "plain": []}
            replies: list[str] = []
            while len(got["deflating"]) < n:
                if len(got["deflating"]) % 100 == 0:  # library-compressed replies between the batches
                    await deflating.send(json.dumps({"type": "ping"}))
                frame = json.loads(await asyncio.wait_for(deflating.recv(), 30))
                if frame["type"] in ("events", "event"):
                    got["deflating"] += _task_ids(frame)
                else:
                    replies.append(frame["type"])
            while len(got["plain"]) < n:
                got["plain"] += _task_ids(json.loads(await asyncio.wait_for(plain.recv(), 30)))
            (await producer).stop()
            assert got["deflating"] == got["plain"] == [f"id{i}" for i in range(n)]
            assert "pong" in replies
            assert all(compressed for compressed, _ in wire)  # every frame arrived compressed, batches included
            assert sum(size for _, size in wire) < n * len(blob) // 4
        finally:
            await deflating.close()
            await plain.close()


def _task_ids(frame: dict[str, Any]) -> list[str]:
    if frame["type"] == "events":
        return [item["event"]["task_id"] for item in frame["events"]]
    return [frame["event"]["task_id"]] if frame["type"] == "event" else []


async def test_a_non_ascii_close_reason_is_cut_to_the_frame_limit_and_the_close_arrives(
    redis_srv: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # 60 emoji are 60 characters but 240 bytes: cut by characters, the reason overflowed the 123 bytes a close
    # frame allows, the server logged a ProtocolError and dropped the connection without a close code (1006).
    caplog.set_level(logging.INFO)
    path = "/ws/events?v=2&task_name=" + "\N{GRINNING FACE}" * 60
    settings = Settings(redis_url=redis_srv.url)
    async with serve(settings) as (_s, port, _app), connect(f"ws://127.0.0.1:{port}{path}") as ws:
        frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert frame["type"] == "error" and frame["code"] == "unknown_task_name", frame
        with pytest.raises(Exception) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    received = getattr(closed.value, "rcvd", None)
    assert received is not None and received.code == 4400, closed.value
    assert 0 < len(received.reason.encode()) <= 123 and frame["message"].startswith(received.reason)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
