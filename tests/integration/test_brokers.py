"""``taskiq_monitor.brokers.ListQueueBroker`` against a real redis-server: an idle listener outlives the socket
timeout that kills taskiq-redis's own (``BRPOP key 0``), and messages still arrive; a restart of Redis neither ends
the listener nor, in a real ``taskiq-monitor worker``, the worker processes and the tasks they are running."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.exceptions
from taskiq import BrokerMessage
from taskiq_redis import ListQueueBroker as TaskiqListQueueBroker

from taskiq_monitor.brokers import ListQueueBroker
from tests.integration.servers import RedisServer, Worker, produce, sample, wait_for

# Short, so that the test waits seconds: redis-py 8's default is 5 s. The broker's BRPOP (1 s) stays under it.
SOCKET_TIMEOUT_SECONDS = 2.0
IDLE_SECONDS = 3 * SOCKET_TIMEOUT_SECONDS


@contextlib.asynccontextmanager
async def _listening(broker: TaskiqListQueueBroker) -> AsyncIterator[asyncio.Future[bytes]]:
    """The broker's listener, waiting for its first message; the listener and the broker are closed after."""
    messages = broker.listen()
    received = asyncio.ensure_future(messages.__anext__())
    try:
        yield received
    finally:
        received.cancel()
        with contextlib.suppress(BaseException):
            await received
        await messages.aclose()
        await broker.shutdown()


async def _idle_then_receive(broker: TaskiqListQueueBroker) -> bytes:
    """Listen through an idle period longer than the socket timeout, then push one message and return it."""
    async with _listening(broker) as received:
        await asyncio.sleep(IDLE_SECONDS)  # nothing is queued: the listener must survive this
        if received.done():
            received.result()  # raises what killed the listener
            raise AssertionError("received a message from an empty queue")
        await broker.kick(BrokerMessage(task_id="1", task_name="t", message=b"hello", labels={}))
        return await asyncio.wait_for(received, 30)


def test_an_idle_listener_outlives_the_socket_timeout_and_still_receives(redis_server: RedisServer) -> None:
    broker = ListQueueBroker(redis_server.url, queue_name="brokers-idle", socket_timeout=SOCKET_TIMEOUT_SECONDS)
    assert asyncio.run(_idle_then_receive(broker)) == b"hello"


def test_taskiq_redis_own_listener_dies_of_the_same_idle_period(redis_server: RedisServer) -> None:
    # The trap this module exists for: if taskiq-redis fixes it, this test says the module can go.
    broker = TaskiqListQueueBroker(redis_server.url, queue_name="brokers-trap", socket_timeout=SOCKET_TIMEOUT_SECONDS)
    with pytest.raises(redis.exceptions.TimeoutError):
        asyncio.run(_idle_then_receive(broker))


def _broker_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == level and r.getMessage().startswith("taskiq-monitor broker: ")
    ]


async def _receive_across_a_restart(
    broker: TaskiqListQueueBroker, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> bytes:
    """Listen, stop Redis until the listener has met the outage a few times, start it again, push one message."""
    async with _listening(broker) as received:

        async def until(done: Callable[[], bool], what: str) -> None:
            deadline = asyncio.get_running_loop().time() + 30
            while not done():
                if received.done():
                    received.result()  # raises what ended the listener
                    raise AssertionError("received a message from an empty queue")
                assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
                await asyncio.sleep(0.05)

        await asyncio.sleep(0.2)  # in its BRPOP
        await asyncio.to_thread(server.stop)
        await until(lambda: len(_broker_lines(caplog, logging.DEBUG)) >= 3, "three failed attempts")
        await asyncio.to_thread(server.start)
        await broker.kick(BrokerMessage(task_id="1", task_name="t", message=b"after", labels={}))
        return await asyncio.wait_for(received, 30)


def test_the_listener_waits_out_a_redis_restart_and_still_receives(
    redis_srv: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="taskiq_monitor")
    broker = ListQueueBroker(redis_srv.url, queue_name="brokers-restart")
    assert asyncio.run(_receive_across_a_restart(broker, redis_srv, caplog)) == b"after"
    # One warning with the cause and the address, one recovery line; the attempts in between are debug records.
    address = re.escape(f"127.0.0.1:{redis_srv.port}/0")
    warnings = _broker_lines(caplog, logging.WARNING)
    assert len(warnings) == 1 and re.match(rf"taskiq-monitor broker: Redis at {address} is unavailable", warnings[0])
    recovered = _broker_lines(caplog, logging.INFO)
    assert len(recovered) == 1 and re.match(rf"taskiq-monitor broker: Redis at {address} reachable again", recovered[0])


def test_a_redis_restart_ends_neither_the_worker_processes_nor_their_running_tasks(
    redis_srv: RedisServer, workdir: Path
) -> None:
    # Before, each worker child's listener raised the ConnectionError of its BRPOP: the child exited at once, taskiq
    # cancelled the tasks it was running (lost: a list queue has no acks) and restarted it, again and again until
    # Redis was back.
    queue = f"q-{uuid.uuid4().hex[:8]}"
    running = 4
    worker = Worker(redis_srv.url, workdir, queue=queue, workers=2)
    try:
        children = sorted(worker.child_pids())
        plan = [("extract_topic_and_atoms_task", [i], {"sim": {"sleep": 6.0}}) for i in range(running)]
        produce(redis_srv.url, plan, kind="list", queue=queue)
        task = {"task_name": "extract_topic_and_atoms_task"}
        wait_for(lambda: sample(worker.scrape(), "taskiq_tasks_running", **task) == running, 30, "4 tasks running")
        redis_srv.stop()
        # The outage began while they ran (else this test proves nothing).
        assert sample(worker.scrape(), "taskiq_tasks_completed_total", status="success", **task) == 0
        redis_srv.start()
        wait_for(
            lambda: sample(worker.scrape(), "taskiq_tasks_completed_total", status="success", **task) == running,
            60,
            "the running tasks to succeed",
        )
        assert sorted(worker.child_pids()) == children  # no worker process was restarted
        # And the listeners are back: a task sent after the restart runs.
        after = [("extract_topic_and_atoms_task", [9], {"sim": {"sleep": 0.0}})]
        produce(redis_srv.url, after, kind="list", queue=queue)
        wait_for(
            lambda: sample(worker.scrape(), "taskiq_tasks_completed_total", status="success", **task) == running + 1,
            60,
            "the task sent after the restart",
        )
        samples = worker.scrape()
        assert sample(samples, "taskiq_tasks_started_total", **task) == running + 1
        assert sample(samples, "taskiq_tasks_running", **task) == 0
    finally:
        worker.stop()


def test_the_first_message_sent_after_a_redis_restart_is_sent(redis_srv: RedisServer) -> None:
    # The side that calls .kiq() (a web app): its first send after every Redis restart failed with
    # "Connection closed by server" (SendTaskError), on an idle pooled connection the old server had closed.
    broker = ListQueueBroker(redis_srv.url, queue_name="brokers-kick-restart")

    def message(i: int) -> BrokerMessage:
        return BrokerMessage(task_id=str(i), task_name="t", message=f"m{i}".encode(), labels={})

    async def run() -> list[bytes]:
        await broker.startup()
        try:
            await asyncio.gather(*(broker.kick(message(i)) for i in range(4)))  # several pooled connections
            await asyncio.to_thread(redis_srv.stop)
            await asyncio.to_thread(redis_srv.start)  # empty: the four are gone with the old server
            for i in range(4, 8):
                await broker.kick(message(i))
            messages = broker.listen()
            try:
                return [await asyncio.wait_for(messages.__anext__(), 30) for _ in range(4)]
            finally:
                await messages.aclose()
        finally:
            await broker.shutdown()

    assert sorted(asyncio.run(run())) == [b"m4", b"m5", b"m6", b"m7"]
