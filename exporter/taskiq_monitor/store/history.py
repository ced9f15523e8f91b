"""The execution history: one record per execution attempt, its compact encoding, and the page cursor.

An execution is keyed by a *member*: ``task_id`` and ``attempt`` packed into a short byte string (a hex or dashed
UUID, taskiq's default task id, takes 16 bytes instead of 32-36). The same member names the record and its entry in
the indexes, so every byte saved counts twice.

A record is a *blob*: one status letter (so the store's script can tell a stale event from a newer one without
decoding), one format letter, then the fields as a positional JSON list (no key names), zlib-compressed with a
preset dictionary when that is smaller. The blob is built by the sink's flusher thread, never on the task's loop.

Each execution has a *score*: its first recorded time (enqueue time, or start time when the ``pending`` event was
never seen) in milliseconds. It never changes when the status does, so a cursor ``(score, member)`` stays valid
while executions are written and change status. Pages are ordered newest first by ``(score, member)``; ties on the
score are ordered by the member's bytes, as Redis orders equal scores.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from dataclasses import dataclass
from typing import Any

import orjson

from taskiq_monitor.events import TaskEvent
from taskiq_monitor.store.deflate import HOLD_GIL_MAX, packer_for

HISTORY_STATUSES: tuple[str, ...] = ("pending", "running", "success", "failed", "retried")
STATUS_CODE = {"pending": "p", "running": "r", "success": "s", "failed": "f", "retried": "t"}
CODE_STATUS = {v: k for k, v in STATUS_CODE.items()}
# A later event of an attempt never goes back: a "pending" that arrives after its "running" (another process,
# another flush) does not overwrite it. The script in lua/apply.lua holds the same ranks.
STATUS_RANK = {"pending": 0, "running": 1, "success": 2, "failed": 2, "retried": 2}
MAX_ATTEMPT_PROBE = 32  # attempts of one task read by id in one call (retries are numbered 1, 2, 3...)

FORMAT_JSON = "j"
FORMAT_ZLIB = "z"  # zlib with ZDICT (a preset dictionary: changing it is a new format letter)
_JSON_LETTER, _ZLIB_LETTER = FORMAT_JSON.encode(), FORMAT_ZLIB.encode()
COMPRESS_MIN = 96  # shorter blobs are stored as they are (zlib's header would eat the gain)
COMPRESS_ALWAYS = 1024  # a pending/running record this large is compressed too
FIELDS = (
    "task_name",
    "enqueued_at",
    "started_at",
    "finished_at",
    "duration_seconds",
    "queue_wait_seconds",
    "host",
    "pid",
    "args",
    "kwargs",
    "labels",
    "error_type",
    "error_message",
    "traceback",
    "trace_id",
    "span_id",
)
_STORED = (FIELDS[0], "base", *FIELDS[1:])  # the positional layout of a blob's JSON list
# What typical records repeat: JSON punctuation, taskiq's labels, Python traceback lines.
ZDICT = (
    b'null,null,null,null,[],{},"_retries":"","retry_on_error":"true","max_retries":'
    b'"Traceback (most recent call last):\n  File "/usr/lib/python3/site-packages/taskiq/receiver/receiver.py", '
    b"line , in \n    raise \n    return await \nError: Exception ValueError RuntimeError TimeoutError "
    b'"user_id":"order_id":"email":"id":"message":"text":"url":"count":"amount":"[REDACTED]",'
    b'true,false,0.0,.0,1764,"worker-1","tasks:process_",'
)

_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_UUID36 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_HEX_MARK = b"\x01"
_UUID_MARK = b"\x02"
_TEXT_MARK = b"\x03"


def encode_member(task_id: str, attempt: int) -> bytes:
    """``(task_id, attempt)`` -> the short key of the execution (see the module docstring)."""
    if _HEX32.match(task_id):
        return _HEX_MARK + bytes.fromhex(task_id) + str(attempt).encode()
    if _UUID36.match(task_id):
        return _UUID_MARK + bytes.fromhex(task_id.replace("-", "")) + str(attempt).encode()
    return _TEXT_MARK + str(attempt).encode() + b":" + task_id.encode("utf-8", "backslashreplace")


def decode_member(member: bytes) -> tuple[str, int]:
    mark = member[:1]
    if mark in (_HEX_MARK, _UUID_MARK):
        hexed = member[1:17].hex()
        if mark == _UUID_MARK:
            hexed = f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"
        return hexed, int(member[17:])
    attempt, _, task_id = member[1:].partition(b":")
    return task_id.decode("utf-8", "replace"), int(attempt)


def event_score(event: TaskEvent) -> int:
    """The execution's time in ms: when it was enqueued (or, never seen pending, started or recorded)."""
    first = event.enqueued_at if event.enqueued_at is not None else event.started_at
    return int((first if first is not None else event.timestamp) * 1000)


_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _json_default(value: Any) -> str:
    return repr(value)


def _us(value: float | None) -> float | None:
    """``value`` to the microsecond: the nearest double to the same decimal as ``round(value, 6)`` (only a tie may
    break the other way, by the product's own rounding), at a third of its cost; inf and nan as they are."""
    if value is None:
        return None
    try:
        return round(value * 1e6) / 1e6
    except (OverflowError, ValueError):
        return value


def _window_bits(size: int) -> int:
    """log2 of the smallest deflate window (9..15) that holds ``ZDICT`` and ``size`` bytes of record."""
    return min(15, max(9, (len(ZDICT) + size + 262).bit_length()))  # 262: deflate's MIN_LOOKAHEAD


_PACKERS: dict[int, Any] = {}  # window bits -> a compressor with ZDICT loaded, never used itself: copied


def _packer(wbits: int) -> Any:
    """A fresh compressor for a record: a copy of one with the dictionary already loaded (the same output as a new
    one, without hashing the dictionary again for every record)."""
    template = _PACKERS.get(wbits)
    if template is None:
        template = zlib.compressobj(9, zlib.DEFLATED, -wbits, max(1, wbits - 7), zlib.Z_DEFAULT_STRATEGY, ZDICT)
        _PACKERS[wbits] = template
    return template.copy()


def encode_record(event: TaskEvent) -> bytes:
    """The blob of an event's execution record (status letter, format letter, payload).

    Times are stored as one absolute base and short offsets from it (``0.153``, not ``1764000000.153``): digits do
    not compress. Only finished records are compressed (and large ones): pending and running records are replaced
    soon, and compressing costs the flusher thread ~4 µs a record."""
    # Straight-line code, no generators: this runs for every record the flusher writes.
    enqueued, started, finished = event.enqueued_at, event.started_at, event.finished_at
    if enqueued is not None:
        base = enqueued
    elif started is not None:
        base = started
    else:
        base = finished if finished is not None else event.timestamp
    duration, wait = event.duration_seconds, event.queue_wait_seconds
    args, kwargs, labels, error_message, traceback = event.redacted_fields(for_json=True)
    values: list[Any] = [
        event.task_name,
        _us(base),
        None if enqueued is None else _us(enqueued - base),
        None if started is None else _us(started - base),
        None if finished is None else _us(finished - base),
        _us(duration),
        _us(wait),
        event.host,
        event.pid,
        args,
        kwargs,
        labels,
        event.error_type,
        error_message,
        traceback,
        event.trace_id,
        event.span_id,
    ]
    # The trailing fields that are None go; the parameters (index 9 to 11) stay, for json's path below.
    while len(values) > 12 and values[-1] is None:
        values.pop()
    try:
        # orjson: ~1 µs where json.dumps takes ~6 (the flusher encodes every event). Redacted fields hold JSON
        # types only; anything else keeps the repr it had with json (datetimes and dataclasses included).
        raw = orjson.dumps(values, default=_json_default, option=_ORJSON_OPTIONS)
    except TypeError:
        # What orjson refuses (a lone surrogate, a non-str key, an integer beyond 64 bits): json, as before (with the
        # fields a JSON text embedded by orjson decoded: json knows no orjson.Fragment).
        values[9], values[10], values[11] = event.redacted_fields()[:3]
        while values and values[-1] is None:
            values.pop()
        raw = json.dumps(values, separators=(",", ":"), default=_json_default, ensure_ascii=False).encode(
            "utf-8", "backslashreplace"
        )
    head = STATUS_CODE.get(event.status, "p").encode()
    if len(raw) >= COMPRESS_MIN and (STATUS_RANK.get(event.status, 0) == 2 or len(raw) >= COMPRESS_ALWAYS):
        # A window just large enough for the dictionary and the record finds every match a 32 KiB one would (a
        # match cannot reach before the dictionary), and its small tables are allocated in place: the default
        # 256 KiB of zlib state were mmapped and page-faulted afresh for every record (~70 µs each in the
        # flusher thread, against ~5 µs now). The decoder's 32 KiB window reads any smaller one.
        wbits = _window_bits(len(raw))
        # Keeps the GIL (see store/deflate.py); None: zlib's module instead (a large record, or no library).
        compress = packer_for(wbits, ZDICT) if len(raw) <= HOLD_GIL_MAX else None
        if compress is not None:
            packed: bytes | None = compress(raw)  # None: not shorter
        else:
            packer = _packer(wbits)
            packed = packer.compress(raw) + packer.flush()
        if packed is not None and len(packed) < len(raw):
            return head + _ZLIB_LETTER + packed
    return head + _JSON_LETTER + raw


def decode_record(blob: bytes) -> tuple[str, dict[str, Any]]:
    """``blob`` -> ``(status, fields)``; raises ``ValueError`` on a corrupt blob."""
    status = CODE_STATUS.get(chr(blob[0])) if blob else None
    if status is None:
        raise ValueError("not a history record")
    kind, payload = blob[1:2], blob[2:]
    if kind == FORMAT_ZLIB.encode():
        unpacker = zlib.decompressobj(-15, ZDICT)
        payload = unpacker.decompress(payload) + unpacker.flush()
    values = json.loads(payload)
    values += [None] * (len(_STORED) - len(values))
    stored = dict(zip(_STORED, values, strict=False))
    base = stored.pop("base") or 0.0
    for name in ("enqueued_at", "started_at", "finished_at"):
        if stored[name] is not None:
            stored[name] = round(base + stored[name], 6)
    return status, stored


@dataclass(slots=True, frozen=True)
class Execution:
    """One execution attempt as the API returns it (ExecutionSummary / ExecutionDetail of the README)."""

    task_id: str
    attempt: int
    status: str
    score: int
    fields: dict[str, Any]
    # Set when read (store/history_redis.py): the record says pending or running, but the state no longer holds the
    # attempt — its worker died, its message expired, or its final event was dropped. Its outcome is unknown.
    lost: bool = False

    def summary(self) -> dict[str, Any]:
        f = self.fields
        return {
            "task_id": self.task_id,
            "attempt": self.attempt,
            "task_name": f["task_name"],
            "status": self.status,
            "enqueued_at": f["enqueued_at"],
            "started_at": f["started_at"],
            "finished_at": f["finished_at"],
            "duration_seconds": f["duration_seconds"],
            "queue_wait_seconds": f["queue_wait_seconds"],
            "worker": {"host": f["host"] or "", "pid": f["pid"] or 0},
            "error_type": f["error_type"],
            "error_message": f["error_message"],
            "trace_id": f["trace_id"],
            "lost": self.lost,
        }

    def detail(self) -> dict[str, Any]:
        f = self.fields
        return {
            **self.summary(),
            "args": f["args"] if f["args"] is not None else [],
            "kwargs": f["kwargs"] if f["kwargs"] is not None else {},
            "labels": f["labels"] if f["labels"] is not None else {},
            "traceback": f["traceback"],
            "span_id": f["span_id"],
        }


def decode_line(line: str) -> tuple[str, dict[str, Any]]:
    """An event's record JSON (``events.record_json``) -> ``(status, fields)``, as ``decode_record`` gives them.

    The in-process store keeps the line of an execution's latest event as its record (the very string of its
    stream entry): no second encoding, no second copy while the stream holds it. Times to the microsecond, as in a
    blob."""
    record = json.loads(line)
    worker = record.get("worker") or {}
    fields = {name: record.get(name) for name in FIELDS}
    fields["host"], fields["pid"] = worker.get("host"), worker.get("pid")
    for name in ("enqueued_at", "started_at", "finished_at", "duration_seconds", "queue_wait_seconds"):
        fields[name] = _us(fields[name])
    return str(record.get("status", "pending")), fields


def execution(member: bytes, blob: bytes | str, score: int) -> Execution:
    """``blob``: an encoded record (``encode_record``), or an event's record JSON (``decode_line``)."""
    task_id, attempt = decode_member(member)
    status, fields = decode_line(blob) if isinstance(blob, str) else decode_record(blob)
    return Execution(task_id, attempt, status, score, fields)


def encode_cursor(score: int, member: bytes) -> str:
    return base64.urlsafe_b64encode(str(score).encode() + b":" + member).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, bytes]:
    """Raises ``ValueError`` with a readable message."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        score, sep, member = raw.partition(b":")
        if not sep or not member:
            raise ValueError
        return int(score), member
    except (ValueError, binascii.Error):
        raise ValueError(f"malformed cursor {cursor[:40]!r}: pass next_cursor of the previous page") from None


@dataclass(slots=True, frozen=True)
class HistoryQuery:
    """A page request: filters combine with AND; ``None`` = any. Times in ms, inclusive."""

    task_names: frozenset[str] | None = None
    statuses: frozenset[str] | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    cursor: tuple[int, bytes] | None = None
    limit: int = 50


@dataclass(slots=True)
class HistoryPage:
    executions: list[Execution]
    next_cursor: str | None
