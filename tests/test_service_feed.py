"""The live feed's fan-out: bounded client queues, batching per filter group, backlog and gaps, client messages."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from taskiq_monitor.service.feed import Broadcaster, Client, LiveFeed
from taskiq_monitor.settings import Settings
from taskiq_monitor.store import Entry, MemoryStore, StateOp, WriteBatch


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


def _entries(n: int, start: int = 0, task: str = "a", status: str = "pending") -> list[Entry]:
    return [Entry(f"1-{i}", task, status, f'{{"i":{i}}}') for i in range(start, start + n)]


def test_one_dispatch_is_one_shared_batch_per_filter_group() -> None:
    async def run() -> None:
        broadcaster = Broadcaster(MemoryStore(Settings()), 10_000)
        everyone = [Client(100, None, None) for _ in range(3)]
        only_failed = Client(100, None, frozenset({"failed"}))
        for client in [*everyone, only_failed]:
            broadcaster.register(client)
        assert len(broadcaster.groups) == 2
        broadcaster.dispatch([*_entries(3), *_entries(2, 3, status="failed")])
        batches = [client.queue[0] for client in everyone]
        assert all(len(client.queue) == 1 for client in everyone)
        assert batches[0] is batches[1] is batches[2]  # encoded once for the whole group
        frame = json.loads(batches[0].frames[0])
        assert frame["type"] == "events" and frame["v"] == 2
        assert [item["id"] for item in frame["events"]] == [f"1-{i}" for i in range(5)]
        assert [item["event"]["i"] for item in frame["events"]] == list(range(5))
        failed = json.loads(only_failed.queue[0].frames[0])
        assert [item["id"] for item in failed["events"]] == ["1-3", "1-4"]
        assert [json.loads(f)["id"] for f in only_failed.queue[0].singles] == ["1-3", "1-4"]  # v1 frames

    asyncio.run(run())


def test_batch_frames_split_at_the_frame_size_limit() -> None:
    from taskiq_monitor.service.feed import MAX_FRAME_BYTES, batch_frames

    item = '{"id":"1-0","event":{"blob":"' + "x" * (MAX_FRAME_BYTES // 3) + '"}}'
    frames = batch_frames([item] * 7)
    assert len(frames) == 4  # 2 + 2 + 2 + 1: every frame under the limit, none empty
    assert all(len(f) <= MAX_FRAME_BYTES + 64 for f in frames)
    assert sum(len(json.loads(f)["events"]) for f in frames) == 7
    huge = '{"id":"1-0","event":{"blob":"' + "x" * (2 * MAX_FRAME_BYTES) + '"}}'
    assert len(batch_frames([huge, item])) == 2  # an oversized event still goes out, alone


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


def test_slow_client_is_cut_off_and_others_keep_everything() -> None:
    async def run() -> None:
        broadcaster = Broadcaster(MemoryStore(Settings()), 10_000)
        slow, fast = Client(5, None, None), Client(5, None, None)
        broadcaster.register(slow)
        broadcaster.register(fast)
        got: list[str] = []
        for start in range(0, 12, 3):
            broadcaster.dispatch(_entries(3, start))
            got += [item for batch in fast.take() for item in batch.items]  # the fast one reads every tick
        assert slow.overflowed and slow not in broadcaster.clients and slow.wake.is_set()
        assert not fast.overflowed and fast in broadcaster.clients
        assert [json.loads(item)["id"] for item in got] == [f"1-{i}" for i in range(12)]

    asyncio.run(run())
