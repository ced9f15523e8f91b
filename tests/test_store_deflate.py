"""store/deflate.py: history records compressed through zlib without giving up the GIL."""

from __future__ import annotations

import sys
import threading
import time
import zlib
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from taskiq_monitor.events import TaskEvent
from taskiq_monitor.store import deflate
from taskiq_monitor.store.history import ZDICT, _packer, _window_bits, decode_record, encode_record

pytestmark = pytest.mark.skipif(not deflate.available(), reason="zlib cannot be loaded through ctypes here")


def _zlib_module(raw: bytes) -> bytes:
    packer = _packer(_window_bits(len(raw)))
    return packer.compress(raw) + packer.flush()


def _held(raw: bytes) -> bytes | None:
    compress = deflate.packer_for(_window_bits(len(raw)), ZDICT)
    assert compress is not None
    return compress(raw)


RECORDS = [
    b'["noop",1796185740.706367,0.0,0.000018,0.001701,0.001654,0.000018,"vm",27310,[0],'
    b'{"options":{"lang":"en","retries":2}},{"taskiq_monitor_enqueued_at":1796185740.7063673}]',
    b'["tasks:send",1764000000.123457,0.0,null,null,null,null,"worker-1",7,[],{"email":"[REDACTED]"},{}]',
    b"".join(b'  File "/app/m%d.py", line %d, in f\n' % (i % 97, i) for i in range(220)),  # ~8 KB: the largest held
]


@pytest.mark.parametrize("raw", RECORDS, ids=["small task", "redacted", "traceback"])
def test_a_record_compresses_to_the_same_bytes_as_zlibs_module(raw: bytes) -> None:
    assert len(raw) <= deflate.HOLD_GIL_MAX
    assert _held(raw) == _zlib_module(raw)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=2, max_size=deflate.HOLD_GIL_MAX))
def test_any_bytes_compress_as_zlib_does_or_are_left_as_they_are(raw: bytes) -> None:
    # Random bytes rarely shrink: then None, and the caller stores the record uncompressed.
    expected = _zlib_module(raw)
    held = _held(raw)
    if len(expected) < len(raw):
        assert held == expected
        assert zlib.decompressobj(-15, ZDICT).decompress(held) == raw
    else:
        assert held is None


def test_a_record_larger_than_the_bound_is_not_compressed_with_the_gil_held() -> None:
    raw = b"x" * (deflate.HOLD_GIL_MAX + 1)
    assert _held(raw) is None  # encode_record compresses it with zlib's module instead
    event = TaskEvent("failed", "a" * 32, "tasks:send", time.time(), traceback="Traceback\n" * 2_000)
    blob = encode_record(event)
    assert blob[1:2] == b"z" and decode_record(blob)[1]["traceback"] == event.traceback


def test_each_thread_compresses_with_its_own_stream() -> None:
    # A stream is state: two threads sharing one would corrupt each other's records.
    results: dict[int, list[bytes | None]] = {}

    def work(index: int) -> None:
        results[index] = [_held(raw) for raw in RECORDS * 200]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = [_zlib_module(raw) for raw in RECORDS * 200]
    assert all(results[i] == expected for i in range(4))


def test_without_the_library_records_are_compressed_by_zlibs_module(monkeypatch: pytest.MonkeyPatch) -> None:
    event = TaskEvent("failed", "a" * 32, "tasks:send", 1_764_000_000.0, traceback="Traceback\n" * 40)
    with_library = encode_record(event)
    monkeypatch.setattr(deflate, "_LIB", None)
    assert deflate.packer_for(10, ZDICT) is None and not deflate.available()
    assert encode_record(event) == with_library  # the same bytes either way


SWITCH_INTERVAL = 2.0


@pytest.fixture
def spinner() -> Iterator[list[int]]:
    """A thread counting in Python: it advances only while it holds the GIL. The switch interval is raised to
    ``SWITCH_INTERVAL``, so the thread that holds the GIL keeps it until it gives it up itself (for that long)."""
    count = [0]
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            count[0] += 1

    interval = sys.getswitchinterval()
    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while count[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.001)  # a blocking call: gives the GIL to the spinner
    assert count[0] > 0, "the spinner never ran"
    sys.setswitchinterval(SWITCH_INTERVAL)
    try:
        yield count
    finally:
        sys.setswitchinterval(interval)
        stop.set()
        thread.join(30)


def test_compressing_a_record_keeps_the_gil(spinner: list[int]) -> None:
    time.sleep(0.001)  # the spinner now waits for the GIL, which this thread holds from here on
    # ...until the spinner's wait reaches the switch interval and forces a switch: what is seen after that proves
    # nothing either way.
    conclusive_until = time.monotonic() + SWITCH_INTERVAL * 0.75
    raw = RECORDS[0]
    compress = deflate.packer_for(_window_bits(len(raw)), ZDICT)
    assert compress is not None
    advanced = 0
    for _ in range(200):
        before = spinner[0]
        compress(raw)
        advanced += spinner[0] != before
    assert advanced == 0

    assert time.monotonic() < conclusive_until, "inconclusive: 200 compressions outlasted the switch interval"

    # The control: zlib's module gives the GIL up, and the spinner gets to count. On a busy machine the spinner is
    # not scheduled at once when the GIL is free, so the calls go on (each one frees it twice) until it is.
    released = False
    while not released and time.monotonic() < conclusive_until:
        before = spinner[0]
        _zlib_module(raw)
        released = spinner[0] != before
    assert released
