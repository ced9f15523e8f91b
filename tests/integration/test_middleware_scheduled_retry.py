"""Retries that SmartRetryMiddleware hands to a real schedule source (taskiq-redis, on a real redis-server)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from taskiq import Context, InMemoryBroker, SmartRetryMiddleware, TaskiqDepends
from taskiq.kicker import AsyncKicker
from taskiq_redis import ListRedisScheduleSource

from taskiq_monitor.middleware import MonitoringMiddleware
from taskiq_monitor.settings import Settings
from tests.integration.servers import RedisServer
from tests.recording_sink import RecordingSink


async def test_retry_scheduled_through_a_schedule_source_counts_retried_not_failed(redis_server: RedisServer) -> None:
    source = ListRedisScheduleSource(redis_server.url, prefix="retry-test")
    await source.startup()
    registry = CollectorRegistry()
    sink = RecordingSink()
    monitor = MonitoringMiddleware(Settings(), registry=registry, sinks=[sink])
    retry = SmartRetryMiddleware(
        default_retry_count=3, default_delay=0, schedule_source=source, no_result_on_retry=False
    )
    broker = InMemoryBroker(await_inplace=True).with_middlewares(monitor, retry)

    @broker.task(task_name="flaky", retry_on_error=True)
    async def flaky(context: Context = TaskiqDepends()) -> None:
        raise ConnectionError(f"attempt {int(context.message.labels.get('_retries', 0)) + 1}")

    def count(status: str) -> float:
        monitor.flush()
        return (
            registry.get_sample_value("taskiq_tasks_completed_total", {"task_name": "flaky", "status": status}) or 0.0
        )

    await broker.startup()
    try:
        result = await (await flaky.kiq()).wait_result()
        assert result.is_err and isinstance(result.error, ConnectionError)  # no_result_on_retry=False
        schedules = await source.get_schedules()
        assert [int(s.labels["_retries"]) for s in schedules] == [1]  # the retry sits in the schedule source
        assert (count("retried"), count("failed")) == (1, 0)

        # Run the scheduled attempts as taskiq's scheduler would, until the retries are exhausted.
        for expected_retries in (2, None):
            scheduled = schedules[0]
            await source.delete_schedule(scheduled.schedule_id)
            kicker: AsyncKicker[Any, Any] = AsyncKicker(scheduled.task_name, broker, dict(scheduled.labels))
            await (
                await kicker.with_task_id(scheduled.task_id or "").kiq(*scheduled.args, **scheduled.kwargs)
            ).wait_result()
            schedules = await source.get_schedules()
            assert [int(s.labels["_retries"]) for s in schedules] == ([expected_retries] if expected_retries else [])
    finally:
        await broker.shutdown()
        await source.shutdown()

    assert (count("retried"), count("failed"), count("success")) == (2, 1, 0)
    finished = [(e.attempt, e.status) for e in sink.events if e.status in ("retried", "failed", "success")]
    assert finished == [(1, "retried"), (2, "retried"), (3, "failed")]
