"""The live feed's fan-out: one reader of the event stream per exporter, clients grouped by filter, a bounded queue
per client.

Why the fan-out looks like this (measured in ``benchmarks/bench_live.py``): sending one frame costs the exporter
~9 µs per client without compression and 50–330 µs with per-message deflate, so per-event frames saturate one
exporter at ~20k frames/s (100 clients × 200 events/s). Here each event is encoded once, clients with the same
filter share one group (the filter runs once per group, not per client), and a client gets one frame per tick
holding every event it is due — the same bytes, framed once, for the whole group. The tick grows with the number
of clients (50 µs each, at most ``live_batch_seconds``): a few viewers get events at once, a thousand get 20 frames
a second. Deflate is off by default: compressing per client is what made frames expensive; with
``live_compression`` each batch is compressed once for its group (``service/transport.py``).

Nothing here waits for a client: :meth:`Broadcaster.dispatch` writes each tick's batch to every idle client whose
socket takes data (``Client.direct``, one loop over the group, no task switch per client) and queues it for the
others; a client that would exceed its bounds is cut off (``service/feed.py`` then closes it with 1013).

A failed read of the stream is a store outage: ``ready`` is cleared and every client is cut off as ``unavailable``
(``service/feed.py`` closes it with 1011 "state store unavailable", as documented; clients reconnect with
``last_event_id`` and resume without loss), and new connections are refused with 1011 until a read succeeds again.
The log gets one warning when the outage begins (the cause, Redis's address) and one info line when it ends
(``logs.Outage``, shared with the connections' own reads); each failed read is a debug record.
Keeping them open would hide the outage: they got only pings, while filtered connections (which read the store at
once) were closed with 1011.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable

from taskiq_monitor.logs import Outage
from taskiq_monitor.service.frames import Batch, event_item
from taskiq_monitor.service.query import matches
from taskiq_monitor.store import Entry, StateStore, format_event_id, parse_event_id

logger = logging.getLogger(__name__)

SCAN_CHUNK = 500
_READ_BLOCK_MS = 1000
# Frames queued per client are also bounded by size: live_client_queue events of up to event_max_record_bytes each
# (64 KiB by default) could otherwise hold hundreds of MiB per slow client. 32 MiB is ~100 000 typical events.
CLIENT_QUEUE_BYTES = 32 * 1024 * 1024
# Pacing of the reader: after a read, the next waits at least this long per connected client (at most
# live_batch_seconds). The exporter then sends at most ~20,000 frames a second in all, whatever the number of
# clients (a frame written by the broadcaster's loop costs it ~10 µs, mostly the kernel's), and a few clients still
# get each event within a millisecond or so. For 1,000 clients × 1,000 events/s, 25 µs gave p99 42 ms on a quiet
# machine but 200–260 ms beside another process's load, where 50 µs gave 78–82 ms: twice the frames cost the
# clients and the kernel more than the shorter wait saves (docs/benchmarks.md).
TICK_PER_CLIENT = 50e-6

FilterKey = tuple[frozenset[str] | None, frozenset[str] | None]


class Client:
    """One WebSocket client: its filter, protocol version and a bounded queue of batches."""

    __slots__ = (
        "direct",
        "dropped",
        "group",
        "max_bytes",
        "overflowed",
        "pending",
        "queue",
        "queued_bytes",
        "queued_events",
        "sent",
        "size",
        "statuses",
        "task_names",
        "unavailable",
        "version",
        "wake",
    )

    def __init__(
        self,
        size: int,
        task_names: frozenset[str] | None,
        statuses: frozenset[str] | None,
        max_bytes: int = CLIENT_QUEUE_BYTES,
        version: int = 2,
    ) -> None:
        self.size = size
        self.max_bytes = max_bytes
        self.task_names = task_names
        self.statuses = statuses
        self.version = version
        self.queue: deque[Batch] = deque()
        self.queued_bytes = 0
        self.queued_events = 0
        self.overflowed = False
        self.unavailable = False  # cut off by a store outage (closed with 1011)
        self.wake = asyncio.Event()
        # Set when cut off: the connection's handler waits on it, as the sender may be blocked on a full socket.
        self.dropped = asyncio.Event()
        self.group: FilterKey | None = None
        # The last stream id written to the client; the sender and the direct path both advance it.
        self.sent: tuple[int, int] = (0, 0)
        # Set by the connection's sender while it is idle (nothing queued, nothing being written): writes a batch's
        # wire frames at once and returns True, or False when the transport is paused and the batch must queue.
        self.direct: Callable[[Batch], bool] | None = None

    @property
    def filter_key(self) -> FilterKey:
        return self.task_names, self.statuses

    def wants(self, entry: Entry) -> bool:
        return matches(self.task_names, self.statuses, entry.task_name, entry.status)

    def offer(self, batch: Batch) -> bool:
        """Queue ``batch``; False (and nothing queued) when that would exceed the client's bounds."""
        if self.queued_events + len(batch.keys) > self.size or self.queued_bytes + batch.nbytes > self.max_bytes:
            self.overflowed = True
            self.direct = None
            self.wake.set()
            self.dropped.set()
            return False
        self.queue.append(batch)
        self.queued_events += len(batch.keys)
        self.queued_bytes += batch.nbytes
        self.wake.set()
        return True

    def lose_store(self) -> None:
        """Cut off by a store outage: its connection's handler closes it with 1011."""
        self.unavailable = True
        self.direct = None
        self.wake.set()
        self.dropped.set()

    def take(self) -> list[Batch]:
        batches = list(self.queue)
        self.queue.clear()
        self.queued_events = 0
        self.queued_bytes = 0
        self.wake.clear()
        return batches


class Broadcaster:
    """One reader of the stream per exporter; hands each tick's events to every client's bounded queue without
    waiting. Clients are grouped by filter: the filter runs once per group and event, the batch is built once per
    group and tick.

    A client whose queue would exceed ``live_client_queue`` events or ``CLIENT_QUEUE_BYTES`` is cut off (marked
    ``overflowed`` and woken, so its connection closes with 1013); the others never wait for it.

    ``ready`` is set once the stream's position is known. A failed read sets ``down``: ``ready`` is cleared, every
    client is cut off (marked ``unavailable``, closed with 1011), and so is any registered meanwhile; the next
    successful read clears ``down`` and sets ``ready`` again.
    """

    def __init__(self, store: StateStore, queue_size: int, tick: float = 0.0, *, outage: Outage | None = None) -> None:
        self.store = store
        # One warning when the store goes away, one info line when it is back (the feed passes its own, which names
        # the Redis address and is shared with its connections' reads).
        self.outage = outage or Outage(logger, "taskiq-monitor live feed", "the state store")
        self.queue_size = queue_size
        self.tick = tick
        self.groups: dict[FilterKey, set[Client]] = {}
        self.last_key: tuple[int, int] = (0, 0)
        self.ready = asyncio.Event()
        self.down = False  # a store outage: set by a failed read of the stream, cleared by the next good one
        self._task: asyncio.Task[None] | None = None
        # Entries are dispatched a read at a time; a client that keeps up must never overflow within one read.
        self.chunk = max(1, min(SCAN_CHUNK, queue_size // 4))

    @property
    def clients(self) -> set[Client]:
        return {client for group in self.groups.values() for client in group}

    def client_count(self) -> int:
        return sum(len(group) for group in self.groups.values())

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="taskiq-monitor-live-reader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def register(self, client: Client) -> tuple[int, int]:
        """Add a client; every entry after the returned id will be offered to it. During a store outage (a
        connection that passed the ``ready`` check as the outage began) it is cut off at once instead."""
        if self.down:
            client.lose_store()
        else:
            self._join(client)
        return self.last_key

    def refilter(self, client: Client, task_names: frozenset[str] | None, statuses: frozenset[str] | None) -> None:
        self.unregister(client)
        client.task_names, client.statuses = task_names, statuses
        if not client.overflowed and not client.unavailable:
            self._join(client)

    def _join(self, client: Client) -> None:
        client.group = client.filter_key
        self.groups.setdefault(client.group, set()).add(client)

    def unregister(self, client: Client) -> None:
        if client.group is None:
            return
        group = self.groups.get(client.group)
        if group is not None:
            group.discard(client)
            if not group:
                del self.groups[client.group]
        client.group = None

    async def _run(self) -> None:
        backoff = 0.1
        while not self.ready.is_set():
            try:
                self.last_key = parse_event_id(await self.store.last_id())
            except Exception as exc:
                self.outage.failed(exc)
                await asyncio.sleep(backoff)
                backoff = min(5.0, backoff * 2)
            else:
                self.outage.recovered()
                self.ready.set()
        backoff = 0.1
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            # During an outage, probe without blocking: new connections wait for ready, and should not wait a block.
            block_ms = 0 if self.down else _READ_BLOCK_MS
            try:
                entries = await self.store.read_after(format_event_id(self.last_key), self.chunk, block_ms)
                backoff = 0.1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.outage.failed(exc)
                self._lose_store()
                await asyncio.sleep(backoff)
                backoff = min(5.0, backoff * 2)
                continue
            # After every good read, not only after our own failures: a connection's read may have failed alone.
            self.outage.recovered()
            if self.down:
                self.down = False
                self.ready.set()
            self.dispatch(entries)
            if not entries and not self.down:
                await self._follow_reset()
            if len(entries) < self.chunk:
                # Caught up: wait for the rest of the tick, so the next read collects a batch instead of one event
                # (a blocking read returns at the first event; that one is sent at once).
                tick = min(self.tick, self.client_count() * TICK_PER_CLIENT)
                rest = tick - (loop.time() - started)
                if rest > 0:
                    await asyncio.sleep(rest)

    async def _follow_reset(self) -> None:
        """Idle: when the stream now ends before our position, it was reset (a Redis back empty, or another one), and
        the position follows it. Kept, the old position went on in every ``live`` frame: a client resuming from it
        later was refused as "from the future", and missed what was written meanwhile. New entries after a reset
        carry newer ids (times) anyway, so the reads themselves never needed this."""
        try:
            last = parse_event_id(await self.store.last_id())
        except Exception:
            return  # the next read reports an outage
        if last < self.last_key:
            self.last_key = last

    def _lose_store(self) -> None:
        """The outage: refuse new connections (``ready`` cleared) and cut off every client. The stream keeps its
        position (``last_key``): reconnecting clients resume from their own last id."""
        self.down = True
        self.ready.clear()
        for client in self.clients:
            self.unregister(client)
            client.lose_store()

    def dispatch(self, entries: list[Entry]) -> None:
        if not entries:
            return
        self.last_key = entries[-1].key
        if not self.groups:
            return
        keys = [entry.key for entry in entries]
        items = [event_item(entry) for entry in entries]
        everything: Batch | None = None
        for (names, statuses), group in list(self.groups.items()):
            if names is None and statuses is None:
                if everything is None:
                    everything = Batch.of(keys, items)
                batch: Batch | None = everything
            else:
                batch = _select(entries, keys, items, names, statuses)
            if batch is None:
                continue
            for client in list(group):
                # An idle client is written to here, in one loop over the group: waking a task per client and tick
                # cost more than the write itself, and the last of a thousand clients got its frame tens of ms late.
                direct = client.direct
                if direct is not None and not client.queue and _written(direct, batch):
                    continue
                if not client.offer(batch):
                    self.unregister(client)


def _written(direct: Callable[[Batch], bool], batch: Batch) -> bool:
    # One client's broken transport must not end the reader that feeds every client: its batch is queued instead,
    # and its own sender meets the failure.
    try:
        return direct(batch)
    except Exception:
        logger.warning("taskiq-monitor live feed: a direct write failed; the batch is queued", exc_info=True)
        return False


def _select(
    entries: list[Entry],
    keys: list[tuple[int, int]],
    items: list[str],
    names: frozenset[str] | None,
    statuses: frozenset[str] | None,
) -> Batch | None:
    picked = [i for i, entry in enumerate(entries) if matches(names, statuses, entry.task_name, entry.status)]
    if not picked:
        return None
    return Batch.of([keys[i] for i in picked], [items[i] for i in picked])
