"""The live feed through a Redis outage (a real redis-server stopped and restarted, a real uvicorn): connected
clients are closed with 1011, new ones refused with 1011, and after the restart a client resumes with
``last_event_id`` without loss."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from taskiq_monitor.service.feed import CLOSE_UNAVAILABLE
from taskiq_monitor.settings import Settings
from tests.integration.servers import RedisServer
from tests.integration.test_live_api import emit_events, event
from tests.integration.test_service_server import serve


async def _until_live(ws: ClientConnection, frame: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every event received before the ``live`` frame (from ``frame``, already received, on)."""
    events: list[dict[str, Any]] = []
    while True:
        frame = frame or json.loads(await asyncio.wait_for(ws.recv(), 30))
        if frame["type"] == "live":
            return events
        # A gap: the restarted redis-server keeps no data, so the stream starts after the resume id.
        assert frame["type"] in ("events", "gap"), frame
        events += frame.get("events", [])
        frame = None


async def _closed_as_unavailable(ws: ClientConnection) -> None:
    frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
    assert frame == {"type": "error", "code": "unavailable", "message": "state store unavailable"}
    with pytest.raises(ConnectionClosed) as closed:
        await asyncio.wait_for(ws.recv(), 30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == CLOSE_UNAVAILABLE


async def test_redis_outage_closes_live_clients_with_1011_and_they_resume_without_loss(
    redis_srv: RedisServer,
) -> None:
    (await asyncio.to_thread(emit_events, redis_srv.url, [event(i) for i in range(3)])).stop()
    async with serve(Settings(redis_url=redis_srv.url)) as (_server, port, _app):
        url = f"ws://127.0.0.1:{port}/ws/events?v=2"
        async with connect(f"{url}&last_event_id=0-0") as ws:
            before = await _until_live(ws)
            assert [item["event"]["task_id"] for item in before] == ["id0", "id1", "id2"]
            redis_srv.stop()
            await _closed_as_unavailable(ws)  # the connected client is told, not left with pings
        async with connect(url) as fresh:  # and a new one is refused while Redis is down
            await _closed_as_unavailable(fresh)
        redis_srv.start()
        (await asyncio.to_thread(emit_events, redis_srv.url, [event(i) for i in range(3, 6)])).stop()
        # What the web dashboard does: reconnect (with backoff) from the last id received, until live again.
        resume = f"{url}&last_event_id={before[-1]['id']}"
        deadline = time.monotonic() + 60
        while True:
            async with connect(resume) as again:
                first = json.loads(await asyncio.wait_for(again.recv(), 30))
                if first["type"] != "error":
                    after = await _until_live(again, first)
                    break
            assert first["code"] == "unavailable" and time.monotonic() < deadline, first
            await asyncio.sleep(0.2)
        assert [item["event"]["task_id"] for item in after] == ["id3", "id4", "id5"]
