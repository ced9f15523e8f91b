"""``ListQueueBroker``: taskiq-redis's list broker with a bounded ``BRPOP``, for redis-py 8 and later.

taskiq-redis 1.2.4's ``ListQueueBroker`` waits for messages in ``BRPOP key 0`` (forever), and redis-py 8 gives every
connection a 5 s socket timeout by default: an idle worker child then dies with ``TimeoutError`` every 5 s and is
restarted (README, "Known traps"). ``socket_timeout=None`` cures that, but then a graceful shutdown waits forever
in the ``BRPOP``. This broker blocks for at most ``brpop_timeout_seconds`` per call, well under the socket timeout,
and stops within that time on shutdown.

It also waits out a Redis that goes away (a restart, a failover, a network cut): taskiq-redis's listener raises the
connection error of its ``BRPOP``, which ends the worker process at once, cancelling the tasks it runs (lost: a list
queue has no acks), and taskiq restarts it, again and again until Redis is back. This one tries again with a short
backoff (at most ``brpop_timeout_seconds`` between attempts), logs one warning with the cause and one line when Redis
is back, and the running tasks go on. Errors that are not about reaching Redis (a wrong key type) still raise. And
a command that meets a connection the old server closed is sent once more on a new one (unless you pass ``retry``),
so the first ``.kiq()`` after a restart is sent instead of raising ``SendTaskError``.

Everything else is taskiq-redis's: same queue, same messages, so it can replace the original on one side while the
other side still runs it::

    from taskiq_monitor import MonitoringMiddleware
    from taskiq_monitor.brokers import ListQueueBroker

    broker = ListQueueBroker("redis://localhost:6379").with_middlewares(MonitoringMiddleware())
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

from redis.asyncio import Redis
from taskiq_redis import ListQueueBroker as _TaskiqListQueueBroker

from taskiq_monitor.logs import Outage, is_transient, redis_target
from taskiq_monitor.store.redis_store import stale_connection_retry

__all__ = ["ListQueueBroker"]

logger = logging.getLogger(__name__)
_FIRST_BACKOFF_SECONDS = 0.1


class ListQueueBroker(_TaskiqListQueueBroker):
    """taskiq-redis's ``ListQueueBroker`` whose ``listen`` blocks in ``BRPOP`` for ``brpop_timeout_seconds`` at a
    time and waits out an unreachable Redis (see the module docstring)."""

    # Well under redis-py's default 5 s socket timeout, and the longest a shutdown waits for the listener.
    brpop_timeout_seconds: int = 1

    def __init__(self, url: str, *args: Any, **kwargs: Any) -> None:
        # taskiq-redis builds its own pool, whose connections have no retry: after a Redis restart the first send
        # (a web app's .kiq()) met a connection the old server had closed and raised SendTaskError.
        kwargs.setdefault("retry", stale_connection_retry())
        super().__init__(url, *args, **kwargs)
        self._outage = Outage(logger, "taskiq-monitor broker", redis_target(url))

    async def listen(self) -> AsyncGenerator[bytes, None]:
        backoff = _FIRST_BACKOFF_SECONDS
        while True:
            try:
                async with Redis(connection_pool=self.connection_pool) as conn:
                    popped = await conn.brpop([self.queue_name], timeout=self.brpop_timeout_seconds)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._outage.failed(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.brpop_timeout_seconds)
                continue
            self._outage.recovered()
            backoff = _FIRST_BACKOFF_SECONDS
            if popped is not None:
                data = popped[1]
                yield data if isinstance(data, bytes) else data.encode()
