"""The exporter's Loki relay: ships the workers' task events from the Redis event stream to Loki.

With ``loki_shipper=exporter``, workers do not ship to Loki at all: the events they write to the Redis state store
(a capped stream, ``<prefix>:events``, the same records, already redacted) are read by the exporter and pushed from
there. A worker then pays for one sink instead of two (docs/benchmarks.md, "Eleventh pass"), and no worker host
needs a spool directory: the stream is the buffer.

* Reads go through a consumer group (``loki``), so several exporters of one Redis share the work and each entry is
  shipped by one of them. An entry is acknowledged only once Loki accepted it (or rejected it for good, 400/413/422:
  dropped and counted, the rest of its batch shipped, as the worker's sink does). A relay that dies leaves its
  entries pending; another exporter (or this one, restarted) takes them over after ``CLAIM_IDLE_SECONDS``.
* While Loki is down or refuses (5xx, 429, auth errors), the batch in hand is retried with the worker sink's
  backoff, for as long as it takes, and nothing new is read: the stream holds the rest. The stream is capped
  (``stream_max_events``), so an outage longer than the stream covers loses its oldest entries: those are counted
  as dropped (``relay_read.lua`` keeps the group's position to tell), never silently.
* A Redis that lost its data (restarted without persistence) loses the group too. Workers configured for the relay
  create the group with the stream, at its start (``apply.lua``). Failing that (a stream written by other workers),
  the relay remembers the group's last delivered id and position, and recreates the group at the start of a stream
  that began anew, or after that id on a stream that was kept.
* Labels (``service_name``, ``env``) are the exporter's settings; ``task_name``, ``status``, the line and the
  structured metadata (``task_id``, ``trace_id``) are the record's, so Loki holds what the worker's sink would have
  pushed. A record shipped twice (a takeover after a push that Loki did accept) has the same stream, timestamp
  and line, which Loki stores once.

Runs in one daemon thread of the exporter process, never on its event loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from taskiq_monitor.logs import Outage, WarnOnce, redis_target
from taskiq_monitor.metrics import LOG_DROPPED, LOG_RESULTS, LOG_SHIPPED
from taskiq_monitor.settings import Settings
from taskiq_monitor.sinks.loki.format import EntryEncoder, PushEntry, encode_push, gzip_body
from taskiq_monitor.sinks.loki.transport import Backoff, Outcome, Transport, isolate
from taskiq_monitor.store.redis_store import RELAY_GROUP, key_prefix, lua_script, redis_kwargs

logger = logging.getLogger(__name__)

RELAY_READ_LUA = lua_script("relay_read.lua")
GROUP = RELAY_GROUP
# A relay's unacknowledged entries are taken over by another once idle this long. Longer than any push can take
# (loki_timeout_seconds) plus a backoff step, so a live relay retrying through an outage keeps its batch: it renews
# its claim at every retry.
CLAIM_IDLE_SECONDS = 60.0
READ_CHUNK = 200  # entries per read: the byte bound of a batch is checked between reads
POLL_SECONDS = 0.05  # the wait between reads of a stream that had nothing new, while a batch fills or idles
ERROR_PAUSE_SECONDS = 1.0  # after an error reaching Redis, before the next try

_Flat = list[Any]  # a stream entry's fields as Redis returns them: [field, value, field, value, ...]
_second: tuple[str, int] = ("", 0)  # the last "YYYY-MM-DDTHH:MM:SS" parsed, and its unix seconds


def timestamp_ns(text: Any) -> int | None:
    """Unix nanoseconds of a record's RFC3339 ``timestamp`` (``2026-11-28T23:44:22.988142Z``), None if unreadable.

    The date-time part is parsed once per second: records come in bursts of the same second.
    """
    global _second
    if not isinstance(text, str) or len(text) != 27 or text[19] != "." or text[26] != "Z":
        return None
    prefix = text[:19]
    cached = _second
    if cached[0] != prefix:
        try:
            cached = (prefix, int(datetime.fromisoformat(prefix).replace(tzinfo=UTC).timestamp()))
        except ValueError:
            return None
        _second = cached
    micros = text[20:26]
    if not micros.isdigit():
        return None
    return cached[1] * 1_000_000_000 + int(micros) * 1000


def _size(entry: PushEntry) -> int:
    """An entry's approximate size in a push body (its line and metadata, plus the JSON around them)."""
    return len(entry[2]) + len(entry[3].get("task_id", "")) + 64


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


class LokiRelay:
    """Ships the Redis event stream to Loki from one background thread; ``start``/``stop`` from the exporter."""

    def __init__(
        self,
        settings: Settings,
        *,
        consumer: str | None = None,
        claim_idle_seconds: float = CLAIM_IDLE_SECONDS,
    ) -> None:
        import redis

        if not settings.loki_url or not settings.redis_url:
            raise ValueError("the Loki relay needs settings.loki_url and settings.redis_url")
        self.settings = settings
        self._warn = WarnOnce(logger)
        # Redis away: one warning when the relay's reads begin to fail, one info line when they work again.
        self.outage = Outage(logger, "taskiq-monitor Loki relay", redis_target(settings.redis_url))
        self._http = Transport(settings, self._warn)
        self._encoder = EntryEncoder(settings.service_name, settings.env)
        self._statuses = frozenset(settings.loki_statuses)
        self._gzip = settings.loki_compression == "gzip"
        self._backoff = Backoff(settings)
        self._client = redis.Redis.from_url(settings.redis_url, **redis_kwargs(settings))
        self._read_script = self._client.register_script(RELAY_READ_LUA)
        self._prefix = key_prefix(settings)
        self.stream = f"{self._prefix}:events"
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}"
        self._claim_idle_ms = int(claim_idle_seconds * 1000)
        self._next_prune = 0.0  # monotonic time of the next pass over the group's dead consumers (relay_read.lua)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.shipped = 0
        self.dropped = 0
        self.in_hand = 0  # records of the batch being gathered or pushed
        # The group's last delivered id and position in the stream as of this relay's last read ("" before its
        # first): when the group is gone (Redis lost its data), they tell which of the stream's entries are new.
        self._group_seen: tuple[str, str] = ("", "")
        self.collector = RelayCollector(self)

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._main, name="taskiq-monitor-loki-relay", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread. A batch Loki has not accepted stays pending in Redis, for the next relay to take over."""
        self._stop.set()
        self._http.abort()  # wakes a push blocked on a hanging Loki
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        self._thread = None
        with contextlib.suppress(Exception):
            # Forget this consumer when it holds nothing: a restarted exporter is a new one (host:pid). Not while the
            # thread is still in a read (Redis slow past the join): the read may deliver entries after the check,
            # and deleting the consumer would drop them from the group's pending list. Another relay prunes it later.
            alive = thread is not None and thread.is_alive()
            if not alive and not self._client.xpending_range(
                self.stream, GROUP, "-", "+", 1, consumername=self.consumer
            ):
                self._client.xgroup_delconsumer(self.stream, GROUP, self.consumer)
        with contextlib.suppress(Exception):
            self._client.close()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _main(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception as exc:  # Redis down, a bug: logged once per outage, retried; the stream keeps the entries
                self.outage.failed(exc)
                self._stop.wait(ERROR_PAUSE_SECONDS)

    # -- one batch -------------------------------------------------------------------------------------------------
    def _read(self, count: int) -> list[Any]:
        seen_id, seen_pos = self._group_seen
        now = time.monotonic()
        prune = now >= self._next_prune
        lost, entries, last_id, pos, skipped = self._read_script(
            args=[self._prefix, GROUP, self.consumer, count, self._claim_idle_ms, seen_id, seen_pos, int(prune)]
        )
        if prune:
            self._next_prune = now + self._claim_idle_ms / 1000
        self._group_seen = (_text(last_id), str(pos))
        self.outage.recovered()
        if skipped:
            # Not dropped (they were recorded before the relay was set up: by workers that shipped to Loki
            # themselves, or not configured for the relay), but said.
            logger.info(
                "taskiq-monitor: the Loki relay starts at the end of the event stream: %d events already in it are "
                "not shipped",
                skipped,
            )
        if lost:
            self._count(LOG_DROPPED, int(lost))
            self._warn("lost", "taskiq-monitor: %d events left the capped stream before the Loki relay read them", lost)
        return list(entries or [])

    def _step(self) -> None:
        """Gather one batch (records, bytes or wait bound, as the worker's sink), ship it, acknowledge it."""
        settings = self.settings
        ids: list[Any] = []
        batch: list[PushEntry] = []
        size = 0
        due: float | None = None
        while not self._stop.is_set():
            raw = self._read(min(READ_CHUNK, settings.loki_batch_max_records - len(batch)))
            for entry_id, flat in raw:
                ids.append(entry_id)
                entry = self._entry(flat)
                if entry is not None:
                    batch.append(entry)
                    size += _size(entry)
            if len(batch) >= settings.loki_batch_max_records or size >= settings.loki_batch_max_bytes:
                break
            now = time.monotonic()
            if batch and due is None:
                due = now + settings.loki_batch_wait_seconds
            if due is not None and now >= due:
                break
            if ids and not batch:
                break  # only records Loki does not get (loki_statuses): acknowledge them now
            if not raw:
                self._stop.wait(POLL_SECONDS if due is None else min(POLL_SECONDS, max(0.0, due - now)))
        self.in_hand = len(batch)
        if not ids:
            return
        if batch and not self._ship(batch, ids):
            return  # stopped before Loki took it: left pending in Redis
        self._client.xack(self.stream, GROUP, *ids)
        self.in_hand = 0

    def _entry(self, flat: _Flat) -> PushEntry | None:
        fields = {_text(flat[i]): flat[i + 1] for i in range(0, len(flat) - 1, 2)}
        status = _text(fields.get("s", b""))
        if status not in self._statuses:
            return None
        line = _text(fields.get("r", b"{}"))
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            record = {}
        if not isinstance(record, dict):
            record = {}
        task_id = str(record.get("task_id") or "")
        metadata = {"task_id": task_id}
        trace_id = record.get("trace_id")
        if trace_id:
            metadata["trace_id"] = str(trace_id)
        ns = timestamp_ns(record.get("timestamp")) or time.time_ns()
        labels = self._encoder.labels_of(_text(fields.get("t", b"")), status)
        return labels, str(ns), line, metadata

    def _chunks(self, batch: list[PushEntry]) -> list[list[PushEntry]]:
        """``batch`` cut to pushes within ``loki_batch_max_bytes`` (a read may overshoot by one chunk)."""
        chunks: list[list[PushEntry]] = [[]]
        size = 0
        for entry in batch:
            grow = _size(entry)
            if chunks[-1] and size + grow > self.settings.loki_batch_max_bytes:
                chunks.append([])
                size = 0
            chunks[-1].append(entry)
            size += grow
        return chunks

    def _ship(self, batch: list[PushEntry], ids: list[Any]) -> bool:
        """Push ``batch`` until Loki took every record (or rejected some for good); False when stopped first."""
        for chunk in self._chunks(batch):
            while True:
                if self._stop.is_set():
                    return False
                raw = encode_push(chunk)
                outcome, retry_after = self._http.post(gzip_body(raw) if self._gzip else raw)
                if outcome == Outcome.OK:
                    self._backoff.reset()
                    self._count(LOG_SHIPPED, len(chunk))
                    break
                if outcome == Outcome.BAD:
                    self._backoff.reset()
                    rest = isolate(
                        chunk,
                        lambda body: self._http.post(body)[0],
                        lambda n: self._count(LOG_SHIPPED, n),
                        lambda: self._count(LOG_DROPPED, 1),
                    )
                    if not rest:
                        break
                    chunk = rest  # Loki went away while the batch was being split: retry the rest
                self._backoff.failed(retry_after)
                self._warn("down", "taskiq-monitor: Loki unavailable; the relay retries, the stream keeps the events")
                self._renew(ids)
                self._stop.wait(max(0.0, self._backoff.remaining()))
        return True

    def _renew(self, ids: list[Any]) -> None:
        """Keep this relay's claim on ``ids`` while it retries (another relay takes over only a dead one's)."""
        with contextlib.suppress(Exception):
            self._client.xclaim(self.stream, GROUP, self.consumer, 0, ids, justid=True)

    def _count(self, result: str, records: int) -> None:
        if records:
            if result == LOG_SHIPPED:
                self.shipped += records
            elif result == LOG_DROPPED:
                self.dropped += records


class RelayCollector(Collector):
    """The relay's counts in the exporter's ``/metrics``, under the worker sink's names (dashboards and alerts use
    them as they are). Plain numbers read at scrape time, not prometheus_client values: an exporter started with
    ``PROMETHEUS_MULTIPROC_DIR`` in its environment must not also write them to the workers' directory, which it
    serves (they would appear twice)."""

    def __init__(self, relay: LokiRelay) -> None:
        self.relay = relay

    def collect(self) -> Iterator[Metric]:
        records = CounterMetricFamily(
            "taskiq_monitor_log_records",
            "Task event records on their way to Loki, by result (shipped, spooled, dropped).",
            labels=["result"],
        )
        counts = {LOG_SHIPPED: self.relay.shipped, LOG_DROPPED: self.relay.dropped}
        for result in LOG_RESULTS:
            records.add_metric([result], counts.get(result, 0))
        yield records
        yield GaugeMetricFamily(
            "taskiq_monitor_log_queue_records", "Records waiting in memory to be shipped to Loki.", self.relay.in_hand
        )
