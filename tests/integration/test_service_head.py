"""HEAD of every GET route on a real uvicorn (service/head.py): the GET's status and headers, never a body."""

from __future__ import annotations

import asyncio
import http.client
import secrets

from taskiq_monitor.settings import Settings
from tests.integration.servers import RedisServer
from tests.integration.test_live_api import emit_events, event
from tests.integration.test_service_server import serve


def _head_then_get(port: int, path: str, headers: dict[str, str]) -> tuple[http.client.HTTPResponse, bytes, int]:
    """HEAD ``path``, then GET /healthz on the same connection: a body sent after the HEAD's headers would be read
    as the next response's status line."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("HEAD", path, headers=headers)
        head = conn.getresponse()
        body = head.read()
        conn.request("GET", "/healthz")
        after = conn.getresponse()
        after.read()
        return head, body, after.status
    finally:
        conn.close()


async def test_head_of_every_get_route_is_its_headers_without_a_body(redis_srv: RedisServer) -> None:
    # Uptime checkers, load balancers and `curl -I` send HEAD; each route answered 405.
    emit_events(redis_srv.url, [event(i) for i in range(3)]).stop()
    token = secrets.token_hex(8)
    auth = {"Authorization": f"Bearer {token}"}
    async with serve(Settings(redis_url=redis_srv.url, bearer_token=token)) as (_server, port, _app):
        for path in ("/healthz", "/metrics", "/api/v1/tasks", "/api/v1/events", "/api/v1/executions", "/"):
            head, body, after = await asyncio.to_thread(_head_then_get, port, path, auth)
            assert (head.status, body, after) == (200, b"", 200), path
            assert head.getheader("content-type"), path
            assert int(head.getheader("content-length") or 0) > 0, path  # what the GET's body would be
        head, body, after = await asyncio.to_thread(_head_then_get, port, "/api/v1/tasks", {})
        assert (head.status, body, after) == (401, b"", 200)  # the GET's token check, as for the GET
        head, body, after = await asyncio.to_thread(_head_then_get, port, "/api/v1/executions?limit=0", auth)
        assert (head.status, body, after) == (422, b"", 200)
        assert head.getheader("x-content-type-options") == "nosniff"
        status, _ = await asyncio.to_thread(_post, port, "/healthz")
        assert status == 405  # other methods stay refused


def _post(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()
