"""GET /api/v1/events input rules (issue 14 #10): reversed ranges, non-ASCII digits, times without a timezone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from taskiq_monitor.service.app import create_app
from taskiq_monitor.settings import Settings
from tests.integration.servers import RedisServer
from tests.integration.test_live_api import emit_events, event


@pytest.fixture
def tokyo_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The exporter host's timezone must not change what a query means.
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def test_get_events_rejects_reversed_range_and_non_ascii_ids(redis_srv: RedisServer) -> None:
    emit_events(redis_srv.url, [event(i) for i in range(3)]).stop()
    app = create_app(Settings(redis_url=redis_srv.url))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
        for params, words in [
            ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "is after until"),
            ({"cursor": "\u0661\u0662-\u0660"}, "ASCII digits"),  # Arabic-Indic 12-0
            ({"cursor": "1\uff12-0"}, "ASCII digits"),  # a full-width digit
        ]:
            resp = await client.get("/api/v1/events", params=params)
            assert resp.status_code == 422, (params, resp.text)
            assert words in resp.json()["detail"]["message"], resp.text
        same = {"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
        assert (await client.get("/api/v1/events", params=same)).status_code == 200


async def test_get_events_reads_a_time_without_timezone_as_utc(redis_srv: RedisServer, tokyo_local_time: None) -> None:
    emit_events(redis_srv.url, [event(i) for i in range(3)]).stop()
    app = create_app(Settings(redis_url=redis_srv.url))
    soon = (datetime.now(UTC) + timedelta(minutes=1)).replace(tzinfo=None).isoformat()
    past = (datetime.now(UTC) - timedelta(minutes=5)).replace(tzinfo=None).isoformat()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as client:
        # Read as Tokyo time, "until one minute from now" was nine hours ago: an empty page.
        upto = (await client.get("/api/v1/events", params={"until": soon})).json()
        assert len(upto["events"]) == 3
        since = (await client.get("/api/v1/events", params={"since": past, "until": soon})).json()
        assert len(since["events"]) == 3
