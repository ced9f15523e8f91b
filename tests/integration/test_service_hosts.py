"""On a real uvicorn bound to 127.0.0.1: a DNS-rebinding page (a foreign Host) reads nothing, and a page of another
origin cannot open the live feed, with or without the session cookie."""

from __future__ import annotations

import asyncio
import http.client
import json

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from taskiq_monitor.service.auth import SESSION_COOKIE, session_value
from taskiq_monitor.settings import Settings
from tests.integration.servers import RedisServer
from tests.integration.test_service_server import serve

TOKEN = "t0ken-for-origin-tests"


def _get(port: int, path: str, host: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


async def _opens(url: str, **options: object) -> bool:
    """True when the handshake succeeds and the feed says ``live``; False when it is refused with 403."""
    try:
        async with connect(url, open_timeout=10, **options) as ws:  # type: ignore[arg-type]
            assert json.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "live"
            return True
    except InvalidStatus as exc:
        assert exc.response.status_code == 403
        return False


async def test_a_rebound_host_cannot_read_executions_but_localhost_and_probes_can(redis_srv: RedisServer) -> None:
    async with serve(Settings(redis_url=redis_srv.url)) as (_server, port, _app):
        status, body = await asyncio.to_thread(_get, port, "/api/v1/executions", f"rebind.example:{port}")
        assert status == 400
        assert "TASKIQ_MONITOR_ALLOWED_HOSTS" in json.loads(body)["detail"]["message"]
        for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
            status, body = await asyncio.to_thread(_get, port, "/api/v1/executions", host)
            assert status == 200, (host, body)
        # A compose/Kubernetes health check, whatever host it names.
        assert (await asyncio.to_thread(_get, port, "/healthz", "exporter:9808"))[0] == 200
        # The rebinding page's WebSocket: the URL names its own host, the connection goes to 127.0.0.1.
        assert not await _opens(f"ws://rebind.example:{port}/ws/events?v=2", host="127.0.0.1", port=port)


async def test_a_page_of_another_origin_cannot_open_the_live_feed(redis_srv: RedisServer) -> None:
    settings = Settings(redis_url=redis_srv.url, bearer_token=TOKEN, allowed_hosts="dash.example")
    session = {"Cookie": f"{SESSION_COOKIE}={session_value(TOKEN)}"}
    async with serve(settings) as (_server, port, _app):
        url = f"ws://localhost:{port}/ws/events?v=2"
        # The exporter's own page, a page served under a listed name, and clients without Origin (tail).
        assert await _opens(url, origin=f"http://localhost:{port}", additional_headers=session)
        assert await _opens(url, origin="https://dash.example", additional_headers=session)
        assert await _opens(url, additional_headers={"Authorization": f"Bearer {TOKEN}"})
        # Same-site pages (another port, another name of the host) carry the SameSite=Strict cookie: refused.
        for origin in ("http://localhost:3000", f"http://127.0.0.1:{port}", "http://evil.example", "null"):
            assert not await _opens(url, origin=origin, additional_headers=session), origin


@pytest.mark.parametrize("origin", ["http://localhost:3000", "http://evil.example"])
async def test_without_a_token_a_foreign_origin_is_still_refused(redis_srv: RedisServer, origin: str) -> None:
    async with serve(Settings(redis_url=redis_srv.url)) as (_server, port, _app):
        assert not await _opens(f"ws://localhost:{port}/ws/events?v=2", origin=origin)
        assert await _opens(f"ws://localhost:{port}/ws/events?v=2", origin=f"http://localhost:{port}")
