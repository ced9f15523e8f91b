"""Process hooks of the Loki sinks: after a fork, and at exit. Registered once per process, for every live sink.

Threads do not survive ``fork`` (taskiq's worker children are forked), so a child must reset what it inherited
before its first event: :func:`register` installs one ``os.register_at_fork`` hook that calls every live sink's
``after_fork``. Processes that never call ``close()`` still flush at exit through one ``atexit`` hook. One
registration per process, not per sink: a process creating many sinks (tests, reloads) does not pile up hooks.
Both registrations are inherited by forked children, like the sinks themselves.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
import weakref
from typing import Protocol


class ProcessBoundSink(Protocol):
    def after_fork(self) -> None: ...

    def flush_sync(self, timeout: float | None = None) -> None: ...


_SINKS: weakref.WeakSet[ProcessBoundSink] = weakref.WeakSet()
_HOOKS_LOCK = threading.Lock()
_hooks_registered = False


def register(sink: ProcessBoundSink) -> None:
    global _hooks_registered
    with _HOOKS_LOCK:
        _SINKS.add(sink)
        if not _hooks_registered:  # inherited by forked children, like the registrations themselves
            os.register_at_fork(after_in_child=after_fork_all_sinks)
            atexit.register(flush_all_sinks)
            _hooks_registered = True


def after_fork_all_sinks() -> None:
    global _HOOKS_LOCK
    _HOOKS_LOCK = threading.Lock()
    for sink in list(_SINKS):
        with contextlib.suppress(Exception):
            sink.after_fork()


def flush_all_sinks() -> None:
    """``atexit``: flush the sinks whose process never called ``close()`` (a no-op for the others)."""
    for sink in list(_SINKS):
        with contextlib.suppress(Exception):
            sink.flush_sync()
