"""The live feed's fan-out: bounded client queues, one shared batch per filter group, slow clients cut off."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

from taskiq_monitor.service.broadcast import Broadcaster, Client
from taskiq_monitor.service.frames import Batch
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


def test_a_failing_direct_write_queues_the_batch_and_the_other_clients_still_get_it() -> None:
    async def run() -> None:
        broadcaster = Broadcaster(MemoryStore(Settings()), 10_000)
        broken, healthy = Client(100, None, None), Client(100, None, None)
        written: list[str] = []

        def explode(batch: Batch) -> bool:
            raise OSError("transport gone")

        def write(batch: Batch) -> bool:
            written.extend(batch.items)
            return True

        broken.direct, healthy.direct = explode, write
        broadcaster.register(broken)
        broadcaster.register(healthy)
        broadcaster.dispatch(_entries(3))
        assert len(broken.queue) == 1 and broken.wake.is_set()  # its sender takes it from here
        assert [json.loads(item)["id"] for item in written] == ["1-0", "1-1", "1-2"]
        assert not healthy.queue

    asyncio.run(run())


class _FlakyStore(MemoryStore):
    """The in-process store, with reads of the stream failing while ``failing`` (a Redis outage)."""

    failing = False

    async def read_after(self, after: str, count: int, block_ms: int) -> list[Entry]:
        if self.failing:
            raise ConnectionError("redis down")
        return await super().read_after(after, count, block_ms)


def test_store_outage_cuts_off_every_client_refuses_new_ones_and_recovers() -> None:
    async def run() -> None:
        store = _FlakyStore(Settings())
        broadcaster = Broadcaster(store, 10_000)
        broadcaster.start()
        try:
            await asyncio.wait_for(broadcaster.ready.wait(), 10)
            everyone, only_failed = Client(100, None, None), Client(100, None, frozenset({"failed"}))
            broadcaster.register(everyone)
            broadcaster.register(only_failed)
            store.failing = True
            for client in (everyone, only_failed):
                await asyncio.wait_for(client.dropped.wait(), 10)
                assert client.unavailable and not client.overflowed  # closed with 1011, not 1013
            assert broadcaster.down and not broadcaster.ready.is_set() and not broadcaster.clients
            late = Client(100, None, None)  # passed the ready check just before the outage
            broadcaster.register(late)
            assert late.unavailable and late.dropped.is_set() and late not in broadcaster.clients
            store.failing = False
            await asyncio.wait_for(broadcaster.ready.wait(), 10)
            assert not broadcaster.down
            back = Client(100, None, None)
            broadcaster.register(back)
            assert back in broadcaster.clients and not back.unavailable
        finally:
            await broadcaster.stop()

    asyncio.run(run())


class _ResettableStore(MemoryStore):
    """The in-process store whose stream can be emptied, as a Redis restarted without persistence is."""

    def reset(self) -> None:
        with self._lock:
            self._events.clear()
            self._keys.clear()
            self._last = (0, 0)


def test_the_live_position_follows_a_stream_that_was_reset() -> None:
    # A client registering after the reset is told where live events follow: not the old stream's position, which
    # it would resume from later and be refused as "from the future" while events written meanwhile were missed.
    async def run() -> None:
        store = _ResettableStore(Settings())
        broadcaster = Broadcaster(store, 10_000)
        broadcaster.start()
        try:
            await asyncio.wait_for(broadcaster.ready.wait(), 10)
            store.write(WriteBatch(now=time.time(), ops=[_op(i) for i in range(3)]))
            await _until(lambda: broadcaster.last_key != (0, 0))
            before = broadcaster.last_key
            store.reset()
            await _until(lambda: broadcaster.last_key == (0, 0))
            assert broadcaster.register(Client(100, None, None)) == (0, 0)
            store.write(WriteBatch(now=time.time(), ops=[_op(9)]))
            await _until(lambda: broadcaster.last_key != (0, 0))
            assert broadcaster.last_key > before  # new entries: newer ids than the old stream's
        finally:
            await broadcaster.stop()

    asyncio.run(run())


def _op(i: int) -> StateOp:
    now = time.time()
    return StateOp("pending", "a", f"id{i}:1", now, now, now, None, "{}")


async def _until(check: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)
