"""``blocking_calls``: which calls that can wait (I/O, sleeps, lock and thread waits) a piece of code makes.

The hot path's promise is structural — ``emit`` only appends to memory, it never waits on a socket, a file or
another thread — so the tests assert that structure instead of a duration, which a loaded CI machine stretches
at will. A profile function is installed on the calling thread only (``sys.setprofile``), so what the shipper
threads do meanwhile is not recorded.

Usage::

    assert blocking_calls(lambda: [sink.emit(e) for e in events]) == []
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

# C functions of these modules do I/O or wait: sockets, select/poll, os-level files, buffered files, TLS.
BLOCKING_MODULES = frozenset({"_socket", "select", "posix", "_io", "_ssl"})
# Other C functions that wait.
BLOCKING_FUNCTIONS = frozenset({"sleep", "acquire", "acquire_lock", "wait", "join", "recv", "send", "sendall"})
# Python functions that wait (threading.Event.wait, Condition.wait, Thread.join…), and libraries that only do I/O.
BLOCKING_PY_NAMES = frozenset({"wait", "wait_for", "join", "acquire", "sleep"})
BLOCKING_PY_PATHS = ("/socket.py", "/selectors.py", "/ssl.py", "/httpx/", "/httpcore/", "/redis/", "/subprocess.py")


def _describe_c(func: Any) -> str | None:
    module = getattr(func, "__module__", None) or type(getattr(func, "__self__", None)).__module__
    name = getattr(func, "__name__", "")
    qualname = getattr(func, "__qualname__", name)
    if module in BLOCKING_MODULES or name in BLOCKING_FUNCTIONS:
        return f"{module}.{qualname}"
    return None


def _describe_py(frame: FrameType) -> str | None:
    code = frame.f_code
    path = code.co_filename.replace("\\", "/")
    if code.co_name in BLOCKING_PY_NAMES or any(part in path for part in BLOCKING_PY_PATHS):
        return f"{path.rsplit('/', 1)[-1]}:{code.co_name}"
    return None


def blocking_calls(action: Callable[[], object]) -> list[str]:
    """Run ``action`` on this thread; return the calls it made that can wait (empty: it never waited)."""
    found: list[str] = []

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event == "c_call":
            # threading.Condition._is_owned probes its lock with acquire(False), which never waits (Event.set).
            described = None if frame.f_code.co_name == "_is_owned" else _describe_c(arg)
        elif event == "call":
            described = _describe_py(frame)
        else:
            return
        if described is not None:
            found.append(described)

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        action()
    finally:
        sys.setprofile(previous)
    return found
