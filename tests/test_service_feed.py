"""The live feed's connection handler: a resume's backlog and gaps, then live events, each exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import pytest

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


def _feed_with_events(n: int) -> tuple[LiveFeed, list[Entry]]:
    """A feed over an in-process store holding ``n`` events (``{"i": 0..n-1}``), and those entries."""
    settings = Settings(stream_max_events=1000)
    mem = MemoryStore(settings)
    now = time.time()
    ops = [StateOp("pending", "a", f"g{i}:1", now, now, now, None, f'{{"i":{i}}}') for i in range(n)]
    mem.write(WriteBatch(now=now, ops=ops))
    return LiveFeed(settings, mem), asyncio.run(mem.read_after("0-0", 1000, 0))


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
    feed, entries = _feed_with_events(20)
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

    async def write(self, data: bytes) -> None:
        await self.writable.wait()
        self.wire += [("sender", payload) for payload in _payloads(data)]

    def write_now(self, data: bytes) -> bool:
        if not self.writable.is_set():
            return False
        self.wire += [("direct", payload) for payload in _payloads(data)]
        return True


def _payloads(data: bytes) -> list[dict[str, Any]]:
    """The JSON payloads of the unmasked text frames in ``data``."""
    out: list[dict[str, Any]] = []
    pos = 0
    while pos < len(data):
        assert data[pos] == 0x81  # an unmasked text frame
        size, offset = data[pos + 1], pos + 2
        if size == 126:
            size, offset = int.from_bytes(data[pos + 2 : pos + 4], "big"), pos + 4
        out.append(json.loads(data[offset : offset + size]))
        pos = offset + size
    return out


@pytest.mark.parametrize("version", [1, 2])
def test_an_idle_client_is_written_by_the_broadcaster_and_a_paused_one_queues_in_order(version: int) -> None:
    feed, entries = _feed_with_events(40)
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
        client = Client(100, None, None, version=version)
        live_from = broadcaster.register(client)
        sender = asyncio.create_task(feed._send(ws, client, None, live_from))  # type: ignore[arg-type]
        await until(lambda: client.direct is not None, "the sender went idle")
        broadcaster.dispatch(entries[:10])
        assert not client.queue and {who for who, _ in ws.wire} == {"direct"}  # written in the dispatch itself
        ws.writable.clear()  # the client stopped reading: its transport is paused
        broadcaster.dispatch(entries[10:20])
        assert len(client.queue) == 1  # queued, and the sender is woken to wait for writable
        await until(lambda: client.direct is None, "the sender took the batch")
        ws.writable.set()
        broadcaster.dispatch(entries[20:30])  # the sender is busy: this one queues behind the other
        await until(lambda: client.direct is not None, "the sender went idle again")
        broadcaster.dispatch(entries[30:40])
        await until(lambda: len(events(ws.wire)) == 40, "every batch written")
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender

    asyncio.run(run())
    assert [f["type"] for f in ws.frames] == ["live"]
    per_batch = 1 if version == 2 else 10  # v2: one frame a batch; v1: one frame an event
    writers = ("direct", "sender", "sender", "direct")
    assert [who for who, _ in ws.wire] == [who for who in writers for _ in range(per_batch)]
    assert [e["i"] for e in events(ws.wire)] == list(range(40))  # in order, once


def events(wire: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The event records of v1 and v2 frames, in order."""
    out: list[dict[str, Any]] = []
    for _, frame in wire:
        out += [item["event"] for item in frame["events"]] if frame["type"] == "events" else [frame["event"]]
    return out


@pytest.mark.parametrize(
    "message",
    ["unknown task_name " + "\N{GRINNING FACE}" * 60, "é" * 100, "x" * 200, "short reason", "a\ud800b" * 50],
)
def test_close_reason_fits_the_close_frame_and_ends_on_a_character(message: str) -> None:
    from taskiq_monitor.service.feed import MAX_CLOSE_REASON_BYTES, close_reason

    reason = close_reason(message)
    data = reason.encode()  # raises if the cut left a broken character or a surrogate
    assert len(data) <= MAX_CLOSE_REASON_BYTES == 123
    assert message.startswith(reason) or "\ud800" in message
    assert len(data) > MAX_CLOSE_REASON_BYTES - 4 or reason == message  # cut only as much as needed
