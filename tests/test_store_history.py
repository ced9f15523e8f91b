"""The history's record encoding and cursor, and the in-process history (same pages as Redis, bounded)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from taskiq_monitor.events import TaskEvent
from taskiq_monitor.settings import Settings
from taskiq_monitor.sinks.state import StateSink
from taskiq_monitor.store import MemoryStore, WriteBatch
from taskiq_monitor.store.history import (
    FIELDS,
    HistoryQuery,
    _us,
    decode_cursor,
    decode_member,
    decode_record,
    encode_cursor,
    encode_member,
    encode_record,
)
from taskiq_monitor.store.history_memory import MEMORY_HISTORY_CAP


def event(status: str = "success", task_id: str = "a" * 32, **kw: Any) -> TaskEvent:
    kw.setdefault("enqueued_at", 1_764_000_000.123456789)
    timestamp = kw.pop("timestamp", time.time())
    return TaskEvent(status=status, task_id=task_id, task_name="tasks:send", timestamp=timestamp, **kw)


@pytest.mark.parametrize(
    ("task_id", "packed"),
    [
        (uuid.uuid4().hex, True),
        (str(uuid.uuid4()), True),
        ("custom-id:with:colons", False),
        ("ünïcode", False),
        ("ABCDEF" * 6, False),
    ],
)
def test_member_round_trips_and_packs_uuids_into_16_bytes(task_id: str, packed: bool) -> None:
    member = encode_member(task_id, 12)
    assert decode_member(member) == (task_id, 12)
    assert (len(member) == 1 + 16 + 2) is packed


def test_record_round_trips_every_field() -> None:
    ev = event(
        "failed",
        attempt=2,
        host="worker-1",
        pid=77,
        started_at=1_764_000_000.5,
        finished_at=1_764_000_001.0,
        duration_seconds=0.5,
        queue_wait_seconds=0.377,
        args=[1, "x"],
        kwargs={"user_id": 5, "obj": object()},
        labels={"_retries": "1"},
        error_type="ValueError",
        error_message="bad",
        traceback="Traceback (most recent call last):\n" + '  File "a.py", line 3, in f\n' * 40,
        trace_id="t" * 32,
        span_id="s" * 16,
    )
    status, fields = decode_record(encode_record(ev))
    assert status == "failed"
    assert set(fields) == set(FIELDS)
    assert fields["enqueued_at"] == 1_764_000_000.123457  # microseconds are kept
    assert fields["kwargs"]["user_id"] == 5 and fields["kwargs"]["obj"].startswith("<object")  # repr, not an error
    assert fields["traceback"] == ev.traceback and fields["span_id"] == "s" * 16
    assert (fields["host"], fields["pid"], fields["args"]) == ("worker-1", 77, [1, "x"])


def test_large_records_are_compressed_and_small_ones_are_not() -> None:
    big = event("failed", traceback='  File "/app/tasks.py", line 10, in run\n    raise ValueError\n' * 50)
    blob = encode_record(big)
    assert blob[1:2] == b"z" and len(blob) < len(big.traceback or "") / 5
    small = encode_record(event("pending", enqueued_at=None))
    assert small[1:2] == b"j" and decode_record(small)[1]["task_name"] == "tasks:send"


@pytest.mark.parametrize("size", [100, 700, 1_500, 3_000, 9_000, 40_000])
def test_compressed_records_of_every_window_size_round_trip(size: int) -> None:
    # The compressor's window is sized to the record; the decoder must read each size, the largest beyond 32 KiB.
    text = "".join(f'  File "/app/m{i % 97}.py", line {i}, in f\n' for i in range(size // 30 + 1))[:size]
    blob = encode_record(event("failed", traceback=text, error_message=str(uuid.uuid4())))
    assert blob[1:2] == b"z"
    assert decode_record(blob)[1]["traceback"] == text


def test_values_that_orjson_refuses_are_encoded_as_before() -> None:
    import datetime as dt

    when = dt.datetime(2026, 12, 1, 14, 0, tzinfo=dt.UTC)
    ev = event(args=[2**70, "lone \udc80 surrogate"], kwargs={"when": when}, labels={"n": 1})
    fields = decode_record(encode_record(ev))[1]
    assert fields["args"] == [2**70, "lone \udc80 surrogate"]  # stored as a JSON escape, read back as it was
    assert fields["kwargs"] == {"when": repr(when)}  # the repr json gave, not orjson's ISO text
    int_keys = decode_record(encode_record(event(kwargs={1: "a"})))[1]
    assert int_keys["kwargs"] == {"1": "a"}


def test_parameters_kept_as_checked_json_text_are_stored_both_ways() -> None:
    from taskiq_monitor.redaction import Redactor

    for message in ("boom", "lone \udc80 surrogate"):  # the second takes json's path (orjson refuses it)
        ev = event("failed", args=[1], kwargs={"options": {"lang": "en"}}, labels={"q": "d"}, error_message=message)
        ev.defer_redaction(Redactor())
        ev.redacted_fields()  # settled: the plain parameters are held as the JSON text that was checked
        fields = decode_record(encode_record(ev))[1]
        assert (fields["args"], fields["kwargs"], fields["labels"]) == ([1], {"options": {"lang": "en"}}, {"q": "d"})
        assert fields["error_message"] == message


def test_corrupt_blob_and_cursor_are_rejected_readably() -> None:
    with pytest.raises(ValueError, match="not a history record"):
        decode_record(b"?j[]")
    with pytest.raises(ValueError, match="malformed cursor"):
        decode_cursor("not-a-cursor")
    member = encode_member("b" * 32, 1)
    assert decode_cursor(encode_cursor(1_764_000_000_123, member)) == (1_764_000_000_123, member)


def write(store: MemoryStore, events: list[TaskEvent]) -> None:
    sink = StateSink(store.settings, writer=store)
    store.write(WriteBatch(now=time.time(), ops=[sink._prepare(e) for e in events]))


async def test_memory_store_pages_filters_and_keeps_the_latest_state() -> None:
    store = MemoryStore(Settings())
    now = time.time()
    events = [
        event("success" if i % 3 else "failed", f"{i:032x}", enqueued_at=now - 100 + i, duration_seconds=0.1)
        for i in range(120)
    ]
    write(store, events)
    write(store, [event("pending", f"{5:032x}", enqueued_at=now - 100 + 5)])  # late: must not go back
    ids: list[str] = []
    cursor = None
    while True:
        page = await store.history_page(HistoryQuery(statuses=frozenset({"failed"}), cursor=cursor, limit=7))
        ids += [e.task_id for e in page.executions]
        if page.next_cursor is None:
            break
        cursor = decode_cursor(page.next_cursor)
    assert ids == [f"{i:032x}" for i in reversed(range(0, 120, 3))]
    attempts = await store.history_attempts(f"{5:032x}")
    assert [(a.attempt, a.status) for a in attempts] == [(1, "success")]
    minute_before = int(time.time() // 60)
    start, series = await store.history_series(5)
    minute_after = int(time.time() // 60)  # a minute boundary may pass during the call
    assert start in {(minute_before - 4) * 60, (minute_after - 4) * 60}
    assert sum(series["tasks:send"]["failed"]) == 40


async def test_memory_history_is_bounded_and_counts_evictions() -> None:
    store = MemoryStore(Settings(history_max_executions=50, history_retention_days=1))
    now = time.time()
    write(store, [event(task_id=f"{i:032x}", enqueued_at=now - 3 * 86400 + i) for i in range(10)])  # too old
    write(store, [event(task_id=f"{100 + i:032x}", enqueued_at=now - 60 + i / 10) for i in range(80)])
    await store.history_expire_step()
    size, evicted = store.history_counts_sync()
    assert (size, evicted) == (50, {"age": 10, "count": 30})
    newest = (await store.history_page(HistoryQuery(limit=50))).executions
    assert [e.task_id for e in newest] == [f"{100 + i:032x}" for i in reversed(range(30, 80))]


def test_memory_history_never_holds_more_than_its_cap() -> None:
    store = MemoryStore(Settings())
    now = time.time()
    write(
        store, [event(task_id=f"{i:032x}", enqueued_at=now - 100 + i / 1000) for i in range(MEMORY_HISTORY_CAP + 5000)]
    )
    assert store.history_counts_sync()[0] <= MEMORY_HISTORY_CAP * 1.1


def batch_of(store: MemoryStore, events: list[TaskEvent]) -> WriteBatch:
    """The batch the state sink's flusher builds from ``events`` (buffered in this order)."""
    sink = StateSink(store.settings, writer=store)
    sink._buffer.extend(events)
    return sink._next_batch()


class EncodingMemoryStore(MemoryStore):
    """The in-process store handed encoded records, as the Redis writer is (the flusher encodes them)."""

    history_from_payload = False


@pytest.mark.parametrize("store_class", [MemoryStore, EncodingMemoryStore])
async def test_a_batch_records_only_the_history_entry_that_survives_it(store_class: type[MemoryStore]) -> None:
    store = store_class(Settings())
    now = time.time()
    done, running_only = f"{1:032x}", f"{2:032x}"
    params: dict[str, Any] = {"args": [7], "kwargs": {"lang": "en"}}
    # An in-place broker's order: the attempt runs and finishes inside .kiq(), so its pending event comes last.
    events = [
        event("running", done, enqueued_at=now - 2, started_at=now - 1, timestamp=now - 1, **params),
        event("success", done, enqueued_at=now - 2, started_at=now - 1, finished_at=now, timestamp=now, **params),
        event("pending", done, enqueued_at=now - 2, timestamp=now - 2, **params),
        event("running", running_only, enqueued_at=now - 3, started_at=now - 1, timestamp=now - 1),
    ]
    batch = batch_of(store, events)
    assert [(op.status, bool(op.history_member)) for op in batch.ops] == [
        ("running", False),
        ("success", True),
        ("pending", False),
        ("running", True),
    ]
    # Only a surviving entry is encoded, and only for a store that takes encoded records.
    encoded = [bool(op.history_record) for op in batch.ops]
    assert encoded == ([False, True, False, True] if store_class is EncodingMemoryStore else [False] * 4)
    store.write(batch)
    # The live feed still gets every event; the history holds what it held when every record was written.
    assert [e.status for e in await store.range_asc("0-0", "99999999999999-0", 10)] == [e.status for e in events]
    reference = store_class(Settings())
    write(reference, events)
    for task_id in (done, running_only):
        got, want = await store.history_attempts(task_id), await reference.history_attempts(task_id)
        assert [(e.status, e.score, e.detail()) for e in got] == [(e.status, e.score, e.detail()) for e in want]
    assert (await store.history_attempts(done))[0].detail()["kwargs"] == {"lang": "en"}


async def test_an_attempt_split_across_batches_keeps_its_latest_record() -> None:
    store = MemoryStore(Settings())
    now = time.time()
    task_id = f"{3:032x}"
    store.write(batch_of(store, [event("running", task_id, started_at=now - 1, timestamp=now - 1)]))
    assert [e.status for e in await store.history_attempts(task_id)] == ["running"]
    failed = event("failed", task_id, started_at=now - 1, finished_at=now, error_type="ValueError", timestamp=now)
    store.write(batch_of(store, [failed, event("pending", task_id, timestamp=now - 2)]))
    [attempt] = await store.history_attempts(task_id)
    assert (attempt.status, attempt.fields["error_type"]) == ("failed", "ValueError")


@pytest.mark.parametrize("seed", range(5))
def test_memory_history_evicts_the_oldest_by_score_whatever_the_arrival_order(seed: int) -> None:
    import random

    rng = random.Random(seed)
    store = MemoryStore(Settings(history_max_executions=40, history_retention_days=1))
    now = time.time()
    scores = {f"{i:032x}": now - rng.uniform(0, 2 * 86400) for i in range(150)}  # some beyond the retention
    ids = list(scores)
    rng.shuffle(ids)
    for start in range(0, len(ids), 7):  # arrivals in random order, several batches, latest status last
        chunk = ids[start : start + 7]
        write(store, [event("running", t, enqueued_at=scores[t]) for t in chunk])
        write(store, [event("success", t, enqueued_at=scores[t]) for t in chunk])
    store.history.expire(now)
    kept = [t for t in sorted(scores, key=lambda t: scores[t]) if scores[t] >= now - 86400][-40:]
    assert sorted(store.history.records) == sorted(encode_member(t, 1) for t in kept)
    assert store.history_counts_sync()[0] == 40


@settings(max_examples=500, deadline=None)
@given(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False))
@example(562949953.9040174)  # a near-tie found by CI
def test_record_times_are_kept_to_the_microsecond_as_round_does(value: float) -> None:
    import math

    stored = _us(value)
    # A tie, or a near-tie the product's own rounding moves, may go the other way: one microsecond apart, as decimals.
    # As doubles, each side is the nearest to its decimal: up to an ulp more (562949953.9040174 stored as .904018).
    assert stored is not None and abs(stored - round(value, 6)) <= 1e-6 + 2 * math.ulp(value)


def test_non_finite_times_are_encoded_as_they_were() -> None:
    record = event("success", enqueued_at=float("inf"), started_at=float("nan"), duration_seconds=float("-inf"))
    status, fields = decode_record(encode_record(record))
    assert status == "success" and fields["enqueued_at"] is None and fields["duration_seconds"] is None
