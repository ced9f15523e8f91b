"""Fifteen demo task types, mirroring the application of the original specification.

Every task takes its domain arguments plus ``sim``, a small dict that decides how the attempt behaves, so that the
workload generator can produce realistic spreads and tests can produce exact, known outcomes::

    sim = {"sleep": 0.2, "fail": "ValueError", "fail_attempts": 1}

* ``sleep`` — seconds of (async) work;
* ``fail`` — raise this exception class on every attempt (``"TimeoutError"`` etc.; see ``ERRORS``);
* ``fail_attempts`` — fail the first N attempts with ``ConnectionError``, then succeed (exercises retries).

``sync_calendar_events_task`` has ``timeout=1`` (a long ``sleep`` times out), ``send_digest_email_task`` retries up
to 3 executions, and ``save_telegram_message`` receives secrets (a bot token, credentials in a URL) in its
parameters. The broker comes from settings: in-memory by default, Redis with ``TASKIQ_MONITOR_DEMO_BROKER_URL``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from taskiq import AsyncBroker, AsyncTaskiqDecoratedTask, Context, InMemoryBroker, SimpleRetryMiddleware, TaskiqDepends

from taskiq_monitor.middleware import MonitoringMiddleware
from taskiq_monitor.settings import Settings


class ExtractionError(RuntimeError):
    """The LLM returned something unusable."""


class UpstreamRateLimited(RuntimeError):
    """A third-party API said 429."""


ERRORS: dict[str, type[BaseException]] = {
    "ValueError": ValueError,
    "KeyError": KeyError,
    "TimeoutError": TimeoutError,
    "ConnectionError": ConnectionError,
    "ExtractionError": ExtractionError,
    "UpstreamRateLimited": UpstreamRateLimited,
}

TIMEOUT_TASK_SECONDS = 1.0
RETRY_TASK_MAX_EXECUTIONS = 3


def make_broker(settings: Settings) -> AsyncBroker:
    url = settings.demo_broker_url
    broker: AsyncBroker
    if not url:
        broker = InMemoryBroker()
    elif settings.demo_broker_kind == "stream":
        from taskiq_redis import RedisStreamBroker

        broker = RedisStreamBroker(url, queue_name=settings.demo_queue_name)
    else:
        from taskiq_monitor.brokers import ListQueueBroker

        broker = ListQueueBroker(url, queue_name=settings.demo_queue_name)
    broker = broker.with_middlewares(
        SimpleRetryMiddleware(default_retry_count=RETRY_TASK_MAX_EXECUTIONS),
        MonitoringMiddleware(settings),
    )
    if settings.otlp_endpoint:
        # Spans by taskiq's own OpenTelemetry middleware, exported over OTLP (the compose stack sends them to Tempo).
        from taskiq_monitor.tracing import instrument_broker, setup_tracing

        instrument_broker(broker, tracer_provider=setup_tracing(settings))
    return broker


settings = Settings()
broker = make_broker(settings)


def _task(**labels: Any) -> Callable[[Callable[..., Any]], AsyncTaskiqDecoratedTask[Any, Any]]:
    # Short names as task names (taskiq's default is "module:function"), as the original application has them.
    def register(func: Callable[..., Any]) -> AsyncTaskiqDecoratedTask[Any, Any]:
        return broker.task(task_name=func.__name__, **labels)(func)

    return register


async def simulate(sim: dict[str, Any] | None, context: Context) -> None:
    sim = sim or {}
    await asyncio.sleep(float(sim.get("sleep", 0.0)))
    attempt = int(context.message.labels.get("_retries", 0) or 0) + 1
    if attempt <= int(sim.get("fail_attempts", 0)):
        raise ConnectionError(f"upstream unavailable (attempt {attempt})")
    fail = sim.get("fail")
    if fail:
        raise ERRORS.get(str(fail), RuntimeError)(f"simulated {fail}")


# -- knowledge extraction -------------------------------------------------------------------------------------------
@_task()
async def extract_knowledge_from_messages_task(
    message_ids: list[int], sim: dict[str, Any] | None = None, context: Context = TaskiqDepends()
) -> int:
    await simulate(sim, context)
    return len(message_ids)


@_task()
async def extract_topic_and_atoms_task(
    topic_id: int, sim: dict[str, Any] | None = None, context: Context = TaskiqDepends()
) -> int:
    await simulate(sim, context)
    return topic_id


@_task()
async def generate_topic_summary_task(
    topic_id: int, sim: dict[str, Any] | None = None, context: Context = TaskiqDepends()
) -> str:
    await simulate(sim, context)
    return f"summary of topic {topic_id}"


# -- scoring and webhooks ------------------------------------------------------------------------------------------
@_task()
async def score_message_task(
    message_id: int, sim: dict[str, Any] | None = None, context: Context = TaskiqDepends()
) -> float:
    await simulate(sim, context)
    return 0.5


@_task()
async def save_telegram_message(
    update: dict[str, Any],
    bot_token: str = "",
    webhook_url: str = "",
    sim: dict[str, Any] | None = None,
    context: Context = TaskiqDepends(),
) -> int:
    await simulate(sim, context)
    return int(update.get("update_id", 0))


# -- analysis ------------------------------------------------------------------------------------------------------
@_task()
async def classify_message_intent_task(
    message_id: int, sim: dict[str, Any] | None = None, context: Context = TaskiqDepends()
) -> str:
    await simulate(sim, context)
    return "question"


@_task()
async def detect_language_task(
    message_id: int, sim: dict[str, Any] | None = None, context: Context = TaskiqDepends()
) -> str:
    await simulate(sim, context)
    return "uk"


@_task()
async def embed_message_task(
    message_id: int, sim: dict[str, Any] | None = None, context: Context = TaskiqDepends()
) -> int:
    await simulate(sim, context)
    return 384


@_task()
async def update_user_profile_task(
    user_id: int, sim: dict[str, Any] | None = None, context: Context = TaskiqDepends()
) -> int:
    await simulate(sim, context)
    return user_id


@_task()
async def recompute_topic_clusters_task(
    project_id: int, sim: dict[str, Any] | None = None, context: Context = TaskiqDepends()
) -> int:
    await simulate(sim, context)
    return project_id


# -- notifications and maintenance ---------------------------------------------------------------------------------
@_task(retry_on_error=True, max_retries=RETRY_TASK_MAX_EXECUTIONS)
async def send_digest_email_task(
    user_id: int, sim: dict[str, Any] | None = None, context: Context = TaskiqDepends()
) -> bool:
    await simulate(sim, context)
    return True


@_task(timeout=TIMEOUT_TASK_SECONDS)
async def sync_calendar_events_task(
    user_id: int, sim: dict[str, Any] | None = None, context: Context = TaskiqDepends()
) -> int:
    await simulate(sim, context)
    return user_id


@_task()
async def cleanup_expired_sessions_task(sim: dict[str, Any] | None = None, context: Context = TaskiqDepends()) -> int:
    await simulate(sim, context)
    return 0


@_task()
async def rebuild_search_index_task(
    index: str, sim: dict[str, Any] | None = None, context: Context = TaskiqDepends()
) -> str:
    await simulate(sim, context)
    return index


@_task()
async def generate_daily_report_task(
    day: str, sim: dict[str, Any] | None = None, context: Context = TaskiqDepends()
) -> str:
    await simulate(sim, context)
    return day


TASKS = [
    extract_knowledge_from_messages_task,
    extract_topic_and_atoms_task,
    generate_topic_summary_task,
    score_message_task,
    save_telegram_message,
    classify_message_intent_task,
    detect_language_task,
    embed_message_task,
    update_user_profile_task,
    recompute_topic_clusters_task,
    send_digest_email_task,
    sync_calendar_events_task,
    cleanup_expired_sessions_task,
    rebuild_search_index_task,
    generate_daily_report_task,
]
TASK_NAMES: list[str] = [t.task_name for t in TASKS]
