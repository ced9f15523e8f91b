"""``taskiq_monitor.brokers.ListQueueBroker`` against a real redis-server: an idle listener outlives the socket
timeout that kills taskiq-redis's own (``BRPOP key 0``), and messages still arrive."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import redis.exceptions
from taskiq import BrokerMessage
from taskiq_redis import ListQueueBroker as TaskiqListQueueBroker

from taskiq_monitor.brokers import ListQueueBroker
from tests.integration.servers import RedisServer

# Short, so that the test waits seconds: redis-py 8's default is 5 s. The broker's BRPOP (1 s) stays under it.
SOCKET_TIMEOUT_SECONDS = 2.0
IDLE_SECONDS = 3 * SOCKET_TIMEOUT_SECONDS


async def _idle_then_receive(broker: TaskiqListQueueBroker) -> bytes:
    """Listen through an idle period longer than the socket timeout, then push one message and return it."""
    messages = broker.listen()
    received = asyncio.ensure_future(messages.__anext__())
    try:
        await asyncio.sleep(IDLE_SECONDS)  # nothing is queued: the listener must survive this
        if received.done():
            received.result()  # raises what killed the listener
            raise AssertionError("received a message from an empty queue")
        await broker.kick(BrokerMessage(task_id="1", task_name="t", message=b"hello", labels={}))
        return await asyncio.wait_for(received, 30)
    finally:
        received.cancel()
        with contextlib.suppress(BaseException):
            await received
        await messages.aclose()
        await broker.shutdown()


def test_an_idle_listener_outlives_the_socket_timeout_and_still_receives(redis_server: RedisServer) -> None:
    broker = ListQueueBroker(redis_server.url, queue_name="brokers-idle", socket_timeout=SOCKET_TIMEOUT_SECONDS)
    assert asyncio.run(_idle_then_receive(broker)) == b"hello"


def test_taskiq_redis_own_listener_dies_of_the_same_idle_period(redis_server: RedisServer) -> None:
    # The trap this module exists for: if taskiq-redis fixes it, this test says the module can go.
    broker = TaskiqListQueueBroker(redis_server.url, queue_name="brokers-trap", socket_timeout=SOCKET_TIMEOUT_SECONDS)
    with pytest.raises(redis.exceptions.TimeoutError):
        asyncio.run(_idle_then_receive(broker))
