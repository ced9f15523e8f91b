"""REST API, bearer token, slow consumers and the `tail` command, against real Redis / worker processes."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from taskiq_monitor.events import TaskEvent
from taskiq_monitor.service.app import create_app
from taskiq_monitor.settings import Settings
from taskiq_monitor.sinks.state import StateSink
from tests.integration._servers import child_env, worker_process
from tests.integration.servers import RedisServer, wait_for


def emit_events(url: str, events: list[TaskEvent], **settings: Any) -> StateSink:
    sink = StateSink(Settings(redis_url=url, **settings), registry=CollectorRegistry())
    for event in events:
        while len(sink._buffer) >= sink._capacity:  # feed at Redis's pace: this test wants no drops
            time.sleep(0.001)
        sink.emit(event)
    wait_for(lambda: sink.written == len(events), 30, f"{len(events)} events written ({sink.written})")
    return sink


def event(i: int, status: str = "pending", task: str = "score_message_task", **kw: Any) -> TaskEvent:
    return TaskEvent(status=status, task_id=f"id{i}", task_name=task, timestamp=time.time(), **kw)


async def test_get_events_pages_newest_first_with_filters_and_cursor(redis_srv: RedisServer) -> None:
    events = [event(i, "failed" if i % 3 == 0 else "success", "a" if i % 2 else "b") for i in range(120)]
    emit_events(redis_srv.url, events).stop()
    app = create_app(Settings(redis_url=redis_srv.url))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            params: dict[str, Any] = {"task_name": "a", "status": "failed,success", "limit": 50}
            if cursor:
                params["cursor"] = cursor
            body = (await client.get("/api/v1/events", params=params)).json()
            pages += 1
            assert len(body["events"]) <= 50
            seen += [e["event"]["task_id"] for e in body["events"]]
            assert all(e["event"]["task_name"] == "a" for e in body["events"])
            cursor = body["next_cursor"]
            if cursor is None:
                break
        assert seen == [f"id{i}" for i in reversed(range(120)) if i % 2]  # all 60, newest first, once
        assert pages == 2
        failed = (await client.get("/api/v1/events", params={"status": "failed", "limit": 50})).json()
        assert {e["event"]["status"] for e in failed["events"]} == {"failed"} and len(failed["events"]) == 40
        future = (await client.get("/api/v1/events", params={"since": time.time() + 60})).json()
        assert future == {"events": [], "next_cursor": None}
        past = (await client.get("/api/v1/events", params={"until": "2001-01-01T00:00:00Z"})).json()
        assert past["events"] == []
        for params, needle in [
            ({"status": "exploded"}, "unknown status"),
            ({"task_name": "nope"}, "unknown task_name 'nope'"),
            ({"cursor": "12-x"}, "malformed event id"),
            ({"limit": 51}, "less than or equal to 50"),
            ({"since": "yesterday"}, "datetime"),
        ]:
            resp = await client.get("/api/v1/events", params=params)
            assert resp.status_code == 422 and needle in resp.text, (params, resp.text)
        assert "/api/v1/events" in (await client.get("/openapi.json")).json()["paths"]


async def test_ws_and_api_require_the_bearer_token(redis_srv: RedisServer) -> None:
    with worker_process(redis_srv.url, workers=1, TASKIQ_MONITOR_BEARER_TOKEN="s3cret") as worker:
        with pytest.raises(urllib.error.HTTPError) as denied:
            await asyncio.to_thread(urllib.request.urlopen, f"{worker.base}/api/v1/tasks", timeout=5)
        assert denied.value.code == 401
        assert json.loads(denied.value.read()) == {
            "detail": {"error": "unauthorized", "message": "missing or invalid bearer token"}
        }
        # Through the real server too: the documented shape, the long value not sent back.
        async with httpx.AsyncClient(base_url=worker.base, headers={"Authorization": "Bearer s3cret"}) as http:
            bad = await http.get("/api/v1/events", params={"cursor": "Z" * 5000, "limit": 1})
        assert bad.status_code == 422 and bad.json()["detail"]["error"] == "malformed_id", bad.text[:300]
        assert "Z" * 81 not in bad.text and len(bad.text) < 400
        async with connect(f"{worker.ws_base}/ws/events") as ws:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert frame["type"] == "error" and frame["code"] == "unauthorized"
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
        async with connect(f"{worker.ws_base}/ws/events?token=s3cret") as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "live"
        headers = {"Authorization": "Bearer s3cret"}
        async with connect(f"{worker.ws_base}/ws/events", additional_headers=headers) as ws:
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "live"


@pytest.mark.parametrize("version", [1, 2])
async def test_slow_client_is_disconnected_without_slowing_others(redis_srv: RedisServer, version: int) -> None:
    # Version 2 batches are written by the broadcaster itself while the socket takes data (service/broadcast.py):
    # the slow client must still be queued, bounded and cut off once its socket is full.
    n = 4000
    # 500 events (~2.5 MB here) of slack for the fast client, which shares its process with the producer thread
    # (on a loaded machine it may lag a few ticks); the slow one falls 20 MB behind.
    with worker_process(redis_srv.url, workers=1, TASKIQ_MONITOR_LIVE_CLIENT_QUEUE="500") as worker:
        url = f"{worker.ws_base}/ws/events?v={version}"
        # The slow client: a tiny receive buffer, and it reads nothing until the fast one has everything.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", worker.port))
        sock.setblocking(False)
        async with connect(url, sock=sock, max_queue=1) as slow, connect(url, max_size=2**24) as fast:
            for ws in (slow, fast):
                assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "live"
            # 4000 × ~5 KiB of incompressible data (permessage-deflate is on): more than the socket buffers hold.
            blob = secrets.token_urlsafe(4096)
            producer = asyncio.create_task(
                asyncio.to_thread(emit_events, redis_srv.url, [event(i, kwargs={"blob": blob}) for i in range(n)])
            )
            got: list[str] = []
            while len(got) < n:
                frame = json.loads(await asyncio.wait_for(fast.recv(), 30))
                if frame["type"] == "event":
                    got.append(frame["event"]["task_id"])
                elif frame["type"] == "events":
                    got += [item["event"]["task_id"] for item in frame["events"]]
            (await producer).stop()
            assert got == [f"id{i}" for i in range(n)]
            # Only now does the slow client read: its feed ends with the reason, not with a silent gap.
            frames: list[dict[str, Any]] = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    frames.append(json.loads(await asyncio.wait_for(slow.recv(), 30)))
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
            assert frames[-1]["type"] == "error" and frames[-1]["code"] == "slow_consumer"
            assert sum(len(f["events"]) if f["type"] == "events" else f["type"] == "event" for f in frames) < n


def test_tail_prints_events_resumes_and_summarises(redis_srv: RedisServer) -> None:
    with worker_process(redis_srv.url, workers=1) as worker:
        events = [event(i, s, task="score_message_task") for i in range(3) for s in ("pending", "running")]
        emit_events(redis_srv.url, events).stop()
        env = child_env(redis_srv.url)
        cmd = [sys.executable, "-m", "taskiq_monitor.cli", "tail", "--url", worker.base, "--no-color"]
        out = subprocess.run(
            [*cmd, "--last-event-id", "0-0", "--count", "6"], env=env, capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert len(lines) == 6 and all("score_message_task" in line for line in lines)
        assert [line.split()[1] for line in lines] == ["pending", "running"] * 3
        filtered = subprocess.run(
            [*cmd, "--last-event-id", "0-0", "--status", "running", "--count", "3"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert [line.split()[1] for line in filtered.stdout.splitlines()] == ["running"] * 3
        summary = subprocess.run([*cmd, "--summary"], env=env, capture_output=True, text=True, timeout=30)
        assert summary.returncode == 0, summary.stderr
        line = next(x for x in summary.stdout.splitlines() if x.startswith("score_message_task:"))
        assert "running=0" in line  # the emitting process was no worker: its "running" left no worker entry
        bad = subprocess.run([*cmd, "--status", "nope"], env=env, capture_output=True, text=True, timeout=30)
        assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_ws_resume_id_from_the_future_or_beyond_64_bits_is_rejected(redis_srv: RedisServer) -> None:
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    settings = Settings(redis_url=redis_srv.url)
    emit_events(redis_srv.url, [event(i) for i in range(3)]).stop()
    with TestClient(create_app(settings)) as client:
        future = f"{int(time.time() * 1000) + 3600_000}-0"
        with client.websocket_connect(f"/ws/events?last_event_id={future}") as ws:
            frame = ws.receive_json()
            assert frame["type"] == "error" and frame["code"] == "future_id", frame
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_json()
            assert closed.value.code == 4400
        with client.websocket_connect(f"/ws/events?last_event_id={2**64}-0") as ws:
            frame = ws.receive_json()
            assert frame["code"] == "malformed_id" and "at most" in frame["message"]
        with client.websocket_connect("/ws/events?last_event_id=0-0") as ws:  # from the start: still fine
            kinds = [ws.receive_json()["type"] for _ in range(4)]
            assert kinds == ["event", "event", "event", "live"]


async def test_events_api_errors_have_the_documented_shape_and_never_echo_a_long_value(redis_srv: RedisServer) -> None:
    emit_events(redis_srv.url, [event(i) for i in range(3)]).stop()
    app = create_app(Settings(redis_url=redis_srv.url))
    long = "Z" * 5000
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
        for params, code, words in [
            ({"limit": 0}, "invalid_parameter", "limit: Input should be greater than or equal to 1"),
            ({"limit": long}, "invalid_parameter", "limit: Input should be a valid integer"),
            ({"since": long}, "invalid_parameter", "since: Input should be a valid datetime"),
            ({"cursor": long}, "malformed_id", "cursor: malformed event id 'ZZZ"),
            ({"cursor": "1" * 30 + "-0"}, "malformed_id", "each at most 18446744073709551615"),
            ({"status": long}, "unknown_status", "(5,000 characters); one of: pending"),
            ({"task_name": long}, "unknown_task_name", "(5,000 characters); known: 'score_message_task'"),
            ({"since": "2026-01-02", "until": "2026-01-01"}, "invalid_range", "is after until"),
        ]:
            resp = await client.get("/api/v1/events", params=params)
            assert resp.status_code == 422 and resp.headers["content-type"] == "application/json", resp.text[:300]
            assert resp.json() == {"detail": {"error": code, "message": resp.json()["detail"]["message"]}}
            assert words in resp.json()["detail"]["message"], resp.text[:300]
            assert "Z" * 81 not in resp.text and len(resp.text) < 400, resp.text[:300]
        # The schema documents that shape for every 422 and 503 (FastAPI's default documents its list).
        schema = (await client.get("/openapi.json")).json()
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            for status in {"422", "503"} & set(operation["responses"]):
                ref = operation["responses"][status]["content"]["application/json"]["schema"]["$ref"]
                assert ref == "#/components/schemas/ErrorResponse", (method, path, status)
    assert {"422", "503"} <= set(schema["paths"]["/api/v1/events"]["get"]["responses"])


async def test_events_api_rejects_bad_input_with_422_and_hides_redis_errors(redis_srv: RedisServer) -> None:
    emit_events(redis_srv.url, [event(i) for i in range(3)]).stop()
    app = create_app(Settings(redis_url=redis_srv.url))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
        for params, words in [
            ({"since": "-5"}, "since: 1969"),
            ({"until": "1960-01-01T00:00:00Z"}, "until: 1960"),
            ({"cursor": "99999999999999999999-0"}, "cursor: malformed event id"),
            ({"cursor": f"1-{2**64}"}, "at most 18446744073709551615"),
        ]:
            resp = await client.get("/api/v1/events", params=params)
            assert resp.status_code == 422, (params, resp.text)
            assert words in resp.json()["detail"]["message"], resp.text
        assert (await client.get("/api/v1/events", params={"cursor": "0-0"})).json()["events"] == []
        assert len((await client.get("/api/v1/events", params={"cursor": f"{2**64 - 1}-0"})).json()["events"]) == 3
    down = Settings(redis_url=f"redis://127.0.0.1:{_free_port()}/0")
    app = create_app(down)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
        for path, params in [("/api/v1/events", {}), ("/api/v1/events", {"task_name": "a"}), ("/api/v1/tasks", {})]:
            resp = await client.get(path, params=params)
            assert resp.status_code == 503
            # No host, port or Redis error text.
            assert resp.json()["detail"] == {"error": "unavailable", "message": "state store unavailable"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
