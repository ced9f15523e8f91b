"""One deadline for the Redis reads of a ``/metrics`` scrape, and none after the first failure.

Two collectors read the state store at each scrape (``StateCollector``, ``HistoryCollector``). With a hung Redis (a
paused process, a host gone without a FIN) each read waited for its 5 s socket timeout in turn: 10 s, exactly
Prometheus' ``scrape_timeout``, so Prometheus dropped the whole scrape — every worker metric of the host — and never
saw ``taskiq_monitor_state_up 0``. Here the reads of one scrape share :data:`SCRAPE_REDIS_SECONDS` in all, and once
one fails or times out the others raise :class:`StoreSkipped` at once: the scrape is served with state_up 0 and the
worker metrics.

A scrape is one ``CombinedSource.collect`` (``service/collectors.py`` opens :func:`scrape`); a collector read
outside one gets a budget of its own. prometheus_client calls collectors synchronously in the scrape's thread,
which a socket read would block until its own timeout: each read runs in a small pool instead, and the scrape
stops waiting at the deadline while the read runs on to its socket timeout (one stuck thread per hung scrape, at
most ``_READERS``).

Usage, in a collector::

    try:
        snap = read(store.snapshot_sync)
    except Exception:
        ...  # report the outage (StoreSkipped included)
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import TypeVar

__all__ = ["SCRAPE_REDIS_SECONDS", "StoreSkipped", "read", "scrape"]

T = TypeVar("T")

# Well under Prometheus' default (and the shipped prometheus.yml's) scrape_timeout of 10 s, which also covers merging
# the worker processes' files and the transfer; and far above a healthy read (~1 ms for the snapshot script).
SCRAPE_REDIS_SECONDS = 2.5
_READERS = 4  # concurrent scrapes (several Prometheus servers) each hold one at a time


class StoreSkipped(Exception):
    """A Redis read not attempted: an earlier read of the same scrape failed, or its deadline has passed."""


class _Budget:
    __slots__ = ("deadline", "failed")

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.failed = False


# A context variable, not a thread-local: FastAPI runs each sync request in a copy of the context, so a scrape's
# budget never leaks into the next request served by the same thread.
_current: ContextVar[_Budget | None] = ContextVar("taskiq_monitor_scrape_budget", default=None)
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


@contextlib.contextmanager
def scrape(seconds: float = SCRAPE_REDIS_SECONDS) -> Iterator[None]:
    """The Redis reads within share one deadline of ``seconds``."""
    previous = _current.get()
    _current.set(_Budget(seconds))
    try:
        yield
    finally:
        # set, not reset(token): a generator closed by the garbage collector may run this in another context.
        _current.set(previous)


def read(fn: Callable[[], T]) -> T:
    """``fn()`` within the current scrape's budget; raises what ``fn`` raises, ``TimeoutError`` at the deadline, or
    :class:`StoreSkipped` after an earlier failure of the scrape. Any failure skips the scrape's later reads."""
    budget = _current.get() or _Budget(SCRAPE_REDIS_SECONDS)
    if budget.failed:
        raise StoreSkipped("an earlier Redis read of this scrape failed")
    remaining = budget.deadline - time.monotonic()
    if remaining <= 0:
        budget.failed = True
        raise StoreSkipped("the scrape's Redis deadline has passed")
    future = _executor().submit(fn)
    try:
        return future.result(timeout=remaining)
    except BaseException:
        budget.failed = True
        future.cancel()  # when still queued behind stuck reads: never run it
        raise


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_READERS, thread_name_prefix="taskiq-monitor-scrape")
        return _pool
