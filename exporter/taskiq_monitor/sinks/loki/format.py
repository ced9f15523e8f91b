"""The Loki push format: task events to push entries, push bodies and back, ``Retry-After``. Pure: no I/O, no
threads, nothing shared.

A record is one JSON line (``events.to_record``) in a stream labelled ``service_name``, ``task_name``, ``status``
(and ``env`` when configured); ``task_id`` and ``trace_id`` travel as structured metadata, never as labels, which
must stay bounded (tens of values). A push body is ``{"streams": [{"stream": {labels}, "values": [[ts_ns, line,
{metadata}], ...]}]}``, sent gzip-compressed (or plain, ``loki_compression``); ``decode_push`` reads one back, to
split a spooled batch that Loki rejected with 400.
"""

from __future__ import annotations

import email.utils
import json
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from taskiq_monitor.events import EVENT_STATUSES, TaskEvent, record_json
from taskiq_monitor.metrics import OTHER

PUSH_PATH = "/loki/api/v1/push"
GZIP_LEVEL = 1  # push bodies are JSON: level 1 already compresses ~10x; higher levels cost CPU for little gain
MAX_STREAM_TASK_NAMES = 200  # task_name label values per process before folding into "other" (the line keeps it)

_STATUSES = frozenset(EVENT_STATUSES)
StreamLabels = tuple[tuple[str, str], ...]
# One value of a stream, with its stream's labels: (labels, timestamp ns as string, line, structured metadata).
PushEntry = tuple[StreamLabels, str, str, dict[str, str]]


def encode_push(entries: Sequence[PushEntry]) -> bytes:
    """The JSON push body (uncompressed) of ``entries``, grouped into streams by their label set."""
    streams: dict[StreamLabels, list[list[Any]]] = {}
    for labels, ts, line, metadata in entries:
        values = streams.get(labels)
        if values is None:
            values = streams[labels] = []
        values.append([ts, line, metadata] if metadata else [ts, line])
    body = {"streams": [{"stream": dict(labels), "values": values} for labels, values in streams.items()]}
    return orjson.dumps(body)  # compact UTF-8 JSON; ~4x faster than json.dumps on the lines it escapes


def decode_push(body: bytes) -> list[PushEntry]:
    """Entries of a (gzip) push body — used to split a spooled batch that Loki rejected with 400."""
    if body[:2] == b"\x1f\x8b":
        body = zlib.decompress(body, wbits=31)
    entries: list[PushEntry] = []
    for stream in json.loads(body)["streams"]:
        labels = tuple(stream["stream"].items())
        for value in stream["values"]:
            entries.append((labels, value[0], value[1], value[2] if len(value) > 2 else {}))
    entries.sort(key=lambda e: int(e[1]))
    return entries


def gzip_body(raw: bytes) -> bytes:
    return zlib.compress(raw, GZIP_LEVEL, wbits=31)


def is_gzip(body: bytes) -> bool:
    """A gzip push body (a plain one is JSON: it starts with ``{``)."""
    return body[:2] == b"\x1f\x8b"


def gzipped(body: bytes) -> bytes:
    """``body`` as gzip (the spool keeps gzip bodies only)."""
    return body if is_gzip(body) else gzip_body(body)


@dataclass(order=True, slots=True)
class Batch:
    """A push body ready to send. ``key`` orders batches (and spool files) by creation."""

    key: tuple[int, int]
    records: int = field(compare=False)
    body: bytes = field(compare=False)  # gzip
    entries: list[PushEntry] | None = field(default=None, compare=False)  # kept in memory for a 400 split
    path: Path | None = field(default=None, compare=False)  # set when the batch lives in the spool


class EntryEncoder:
    """Task events as push entries, with bounded stream labels.

    Not thread-safe: one collector thread encodes. ``task_name`` values beyond ``MAX_STREAM_TASK_NAMES`` are
    folded into ``other`` in the label (the line keeps the real name), so a producer of unbounded task names
    cannot make unbounded streams.
    """

    def __init__(self, service_name: str, env: str | None) -> None:
        self._base_labels: StreamLabels = (("service_name", service_name),)
        self._env = env
        self._task_names: set[str] = set()
        # (task name, status) -> its label set, built once: every entry of a stream shares one tuple. Bounded: task
        # names fold into "other" beyond MAX_STREAM_TASK_NAMES, and a status outside the known ones is not cached.
        self._streams: dict[tuple[str, str], StreamLabels] = {}

    def labels(self, event: TaskEvent) -> StreamLabels:
        return self.labels_of(event.task_name, event.status)

    def labels_of(self, name: str, status: str) -> StreamLabels:
        """The stream labels of a record of task ``name`` in ``status`` (also the exporter's relay's, from a stream
        entry's fields)."""
        task_name = name
        cached = self._streams.get((name, status))
        if cached is not None:
            return cached
        if name not in self._task_names:
            if len(self._task_names) < MAX_STREAM_TASK_NAMES:
                self._task_names.add(name)
            else:
                name = OTHER
        # str(): a TaskStatus member is an object the cyclic GC tracks, and so would be every entry holding it.
        labels = (*self._base_labels, ("task_name", name), ("status", str(status)))
        if self._env:
            labels = (*labels, ("env", self._env))
        if status in _STATUSES and name != OTHER:
            self._streams[(task_name, str(status))] = labels
        return labels

    def entry(self, event: TaskEvent) -> tuple[PushEntry, int]:
        """The entry of ``event`` and its approximate size in a push body (to bound batches by bytes)."""
        line = record_json(event)  # shared with the other sinks: serialised once per event
        metadata = {"task_id": str(event.task_id)}
        if event.trace_id:
            metadata["trace_id"] = str(event.trace_id)
        ts = str(int(event.timestamp * 1_000_000) * 1000)
        return (self.labels(event), ts, line, metadata), len(line) + len(event.task_id) + 64


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when absent or unparseable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError, IndexError):
        return None
