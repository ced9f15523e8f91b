"""``ListQueueBroker``: taskiq-redis's list broker with a bounded ``BRPOP``, for redis-py 8 and later.

taskiq-redis 1.2.4's ``ListQueueBroker`` waits for messages in ``BRPOP key 0`` (forever), and redis-py 8 gives every
connection a 5 s socket timeout by default: an idle worker child then dies with ``TimeoutError`` every 5 s and is
restarted (README, "Known traps"). ``socket_timeout=None`` cures that, but then a graceful shutdown waits forever
in the ``BRPOP``. This broker blocks for at most ``brpop_timeout_seconds`` per call, well under the socket timeout,
and stops within that time on shutdown. Everything else is taskiq-redis's: same queue, same messages, so it can
replace the original on one side while the other side still runs it::

    from taskiq_monitor import MonitoringMiddleware
    from taskiq_monitor.brokers import ListQueueBroker

    broker = ListQueueBroker("redis://localhost:6379").with_middlewares(MonitoringMiddleware())
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

from redis.asyncio import Redis
from taskiq_redis import ListQueueBroker as _TaskiqListQueueBroker

__all__ = ["ListQueueBroker"]


class ListQueueBroker(_TaskiqListQueueBroker):
    """taskiq-redis's ``ListQueueBroker`` whose ``listen`` blocks in ``BRPOP`` for ``brpop_timeout_seconds`` at a
    time (see the module docstring)."""

    # Well under redis-py's default 5 s socket timeout, and the longest a shutdown waits for the listener.
    brpop_timeout_seconds: int = 1

    async def listen(self) -> AsyncGenerator[bytes, None]:
        while True:
            async with Redis(connection_pool=self.connection_pool) as conn:
                popped = await conn.brpop([self.queue_name], timeout=self.brpop_timeout_seconds)
            if popped is not None:
                data = popped[1]
                yield data if isinstance(data, bytes) else data.encode()
