"""The exporter across a restart of its Redis (a real redis-server stopped and started again on the same port, a
real uvicorn), with no request in between: what a Redis upgrade or a failover looks like to a dashboard that is
not polling at that moment.

QA found the first API request after such a restart answered 503 "state store unavailable" (and a warning plus a
recovery line in the log): the exporter's asyncio Redis clients took an idle pooled connection, whose socket the
old server had closed, and gave up on its first error.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from taskiq_monitor.settings import Settings
from tests.integration.servers import RedisServer
from tests.integration.test_service_server import serve

# Every REST route that reads the state store or the history through the exporter's asyncio clients.
READS = ("/api/v1/tasks", "/api/v1/executions", "/api/v1/events", "/api/v1/tasks/series", "/api/v1/executions/x1")
POOLED = 4  # concurrent requests per route: several idle connections in the pool when Redis goes away


async def test_the_first_requests_after_a_redis_restart_are_answered(
    redis_srv: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskiq_monitor")
    async with (
        serve(Settings(redis_url=redis_srv.url)) as (_server, port, _app),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client,
    ):
        before = await asyncio.gather(*(client.get(path) for path in READS * POOLED))
        assert [r.status_code for r in before] == [404 if r.url.path.endswith("/x1") else 200 for r in before]
        redis_srv.stop()
        redis_srv.start()
        after = {path: (await client.get(path)) for path in READS}
    assert {path: r.status_code for path, r in after.items()} == {
        path: 404 if path.endswith("/x1") else 200 for path in READS
    }, {path: r.text for path, r in after.items()}
    # The API met no outage: it says nothing about one.
    api = [r.getMessage() for r in caplog.records if r.getMessage().startswith("taskiq-monitor API: ")]
    assert api == []
