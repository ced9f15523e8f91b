"""The live feed's connection handler: a resume's backlog and gaps, then live events, each exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from taskiq_monitor.service.broadcast import Client
from taskiq_monitor.service.feed import LiveFeed
from taskiq_monitor.service.transport import CONNECTION_EXTENSION
from taskiq_monitor.settings import Settings
from taskiq_monitor.store import Entry, MemoryStore, StateOp, WriteBatch


class FakeWs:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.scope: dict[str, Any] = {}  # no server extensions: frames go through send_text

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


def test_v2_client_gets_backlog_and_live_events_batched_exactly_once() -> None:
    settings = Settings(stream_max_events=1000)
    mem = MemoryStore(settings)
    now = time.time()
    ops = [StateOp("pending", "a", f"g{i}:1", now, now, now, None, f'{{"i":{i}}}') for i in range(20)]
    mem.write(WriteBatch(now=now, ops=ops))
    entries = asyncio.run(mem.read_after("0-0", 1000, 0))
    feed = LiveFeed(settings, mem)
    ws = FakeWs()

    async def run() -> None:
        broadcaster = feed.ensure_broadcaster()
        await asyncio.wait_for(broadcaster.ready.wait(), 5)
        await broadcaster.stop()
        broadcaster.last_key = entries[9].key  # live from the 10th; the backlog is the first 10
        client = Client(100, None, None, version=2)
        live_from = broadcaster.register(client)
        broadcaster.dispatch(entries[5:])  # overlaps the backlog: 5..9 must not be sent twice
        sender = asyncio.create_task(feed._send(ws, client, entries[0].key, live_from))  # type: ignore[arg-type]
        deadline = time.monotonic() + 10
        while sum(len(f.get("events", [])) for f in ws.frames) < 19:
            assert time.monotonic() < deadline, ws.frames
            await asyncio.sleep(0.01)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender

    asyncio.run(run())
    kinds = [f["type"] for f in ws.frames]
    assert kinds[-2:] == ["live", "events"] and set(kinds) == {"events", "live"}
    got = [item["event"]["i"] for f in ws.frames if f["type"] == "events" for item in f["events"]]
    assert got == list(range(1, 20))  # after the resume id, in order, once
    assert len(ws.frames) == 3  # the backlog in one frame, then one frame for the live batch


class RawWs(FakeWs):
    """A connection under the exporter's own server: ``write`` waits while the transport is paused, ``write_now``
    refuses then (``service/transport.py``). Every frame lands in ``wire``, in the order it was written."""

    def __init__(self) -> None:
        super().__init__()
        self.wire: list[tuple[str, dict[str, Any]]] = []
        self.writable = asyncio.Event()
        self.writable.set()
        self.scope = {"extensions": {CONNECTION_EXTENSION: {"write": self.write, "write_now": self.write_now}}}

    async def write(self, frame: bytes) -> None:
        await self.writable.wait()
        self.wire.append(("sender", _payload(frame)))

    def write_now(self, frames: list[bytes]) -> bool:
        if not self.writable.is_set():
            return False
        self.wire += [("direct", _payload(frame)) for frame in frames]
        return True


def _payload(frame: bytes) -> dict[str, Any]:
    assert frame[0] == 0x81  # one unmasked text frame
    size, offset = frame[1], 2
    if size == 126:
        size, offset = int.from_bytes(frame[2:4], "big"), 4
    payload: dict[str, Any] = json.loads(frame[offset : offset + size])
    return payload


def test_idle_v2_client_is_written_by_the_broadcaster_and_a_paused_one_queues_in_order() -> None:
    settings = Settings(stream_max_events=1000)
    mem = MemoryStore(settings)
    now = time.time()
    ops = [StateOp("pending", "a", f"g{i}:1", now, now, now, None, f'{{"i":{i}}}') for i in range(40)]
    mem.write(WriteBatch(now=now, ops=ops))
    entries = asyncio.run(mem.read_after("0-0", 1000, 0))
    feed = LiveFeed(settings, mem)
    ws = RawWs()

    async def until(condition: Any, what: str) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.005)

    async def run() -> None:
        broadcaster = feed.ensure_broadcaster()
        await asyncio.wait_for(broadcaster.ready.wait(), 5)
        await broadcaster.stop()
        broadcaster.last_key = (0, 0)
        client = Client(100, None, None, version=2)
        live_from = broadcaster.register(client)
        sender = asyncio.create_task(feed._send(ws, client, None, live_from))  # type: ignore[arg-type]
        await until(lambda: client.direct is not None, "the sender went idle")
        broadcaster.dispatch(entries[:10])
        assert not client.queue and [who for who, _ in ws.wire] == ["direct"]  # written in the dispatch itself
        ws.writable.clear()  # the client stopped reading: its transport is paused
        broadcaster.dispatch(entries[10:20])
        assert len(client.queue) == 1  # queued, and the sender is woken to wait for writable
        await until(lambda: client.direct is None, "the sender took the batch")
        ws.writable.set()
        broadcaster.dispatch(entries[20:30])  # the sender is busy: this one queues behind the other
        await until(lambda: client.direct is not None, "the sender went idle again")
        broadcaster.dispatch(entries[30:40])
        await until(lambda: len(ws.wire) == 4, "every batch written")
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender

    asyncio.run(run())
    assert [f["type"] for f in ws.frames] == ["live"]
    assert [who for who, _ in ws.wire] == ["direct", "sender", "sender", "direct"]
    got = [item["event"]["i"] for _, frame in ws.wire for item in frame["events"]]
    assert got == list(range(40))  # in order, once
