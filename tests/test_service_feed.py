"""The live feed's fan-out: bounded client queues, batching per filter group, backlog and gaps, client messages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from taskiq_monitor.service.feed import Broadcaster, Client, LiveFeed
from taskiq_monitor.settings import Settings
from taskiq_monitor.state import Entry, MemoryStore, StateOp, WriteBatch


def test_client_queue_is_bounded_by_bytes_too() -> None:
    async def run() -> None:
        broadcaster = Broadcaster(MemoryStore(Settings()), 10_000)
        client = Client(10_000, None, None, max_bytes=10_000)
        broadcaster.register(client)
        payload = '{"blob":"' + "x" * 3000 + '"}'
        broadcaster.dispatch([Entry(f"1-{i}", "a", "pending", payload) for i in range(3)])
        assert not client.overflowed and client.queued_bytes > 9000
        broadcaster.dispatch([Entry("1-3", "a", "pending", payload)])
        assert client.overflowed and client not in broadcaster.clients

    asyncio.run(run())


class FakeWs:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    async def send_text(self, text: str) -> None:
        self.frames.append(json.loads(text))


def test_gap_is_reported_when_the_stream_is_trimmed_while_the_backlog_is_sent() -> None:
    settings = Settings(stream_max_events=1000)
    mem = MemoryStore(settings)
    now = time.time()

    def write(n: int, start: int) -> None:
        ops = [StateOp("pending", "a", f"g{i}:1", now, now, now, None, f'{{"i":{i}}}') for i in range(start, start + n)]
        mem.write(WriteBatch(now=now, ops=ops))

    write(1000, 0)
    first_read = asyncio.run(mem.read_after("0-0", 1000, 0))
    resume, live_from = first_read[0].key, first_read[-1].key
    original = mem.range_asc
    calls = 0

    async def trimming_range_asc(after: str, until: str, count: int) -> list[Entry]:
        nonlocal calls
        calls += 1
        chunk = await original(after, until, count)
        if calls == 1:
            write(800, 1000)  # the oldest 800 entries are trimmed while the client reads its backlog
        return chunk

    mem.range_asc = trimming_range_asc  # type: ignore[method-assign]
    feed = LiveFeed(settings, mem)
    ws = FakeWs()
    client = Client(10, None, None, version=1)

    async def run() -> None:
        sender = asyncio.create_task(feed._send(ws, client, resume, live_from))  # type: ignore[arg-type]
        deadline = time.monotonic() + 5
        while not any(f["type"] == "live" for f in ws.frames):
            assert time.monotonic() < deadline, ws.frames[-3:]
            await asyncio.sleep(0.01)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender

    asyncio.run(run())
    kinds = [f["type"] for f in ws.frames]
    assert "gap" in kinds
    gap = kinds.index("gap")
    events = [f["event"]["i"] for f in ws.frames if f["type"] == "event"]
    assert events[:gap] == list(range(1, gap + 1))  # before the gap: in order from the resume point
    assert events == sorted(set(events)) and events[-1] == 999
