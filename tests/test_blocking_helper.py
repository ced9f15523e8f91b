"""The helper behind the hot-path tests (tests/blocking.py) sees the calls that wait, and only those."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

from tests.blocking import blocking_calls


def test_sleep_socket_file_and_thread_waits_are_reported(tmp_path: Path) -> None:
    event = threading.Event()
    event.set()
    left, right = socket.socketpair()
    try:
        right.sendall(b"x")
        assert blocking_calls(lambda: time.sleep(0)) == ["time.sleep"]
        assert any("recv" in call for call in blocking_calls(lambda: left.recv(1)))
        assert blocking_calls(lambda: event.wait(0))  # threading.Event.wait
        assert blocking_calls(lambda: (tmp_path / "f").write_bytes(b"x"))
        assert blocking_calls(lambda: os.stat(tmp_path))
        lock = threading.Lock()
        assert blocking_calls(lambda: lock.acquire() and lock.release())
    finally:
        left.close()
        right.close()


def test_memory_work_and_event_set_are_not_reported() -> None:
    items: list[int] = []
    event = threading.Event()
    assert blocking_calls(lambda: [items.append(i) for i in range(100)]) == []
    assert blocking_calls(event.set) == []  # takes the condition's lock briefly, never waits
    assert items == list(range(100))
