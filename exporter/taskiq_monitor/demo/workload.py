"""The demo's workload: which task types run how often, how long, and how they fail.

Durations are log-normal (background work has long tails); failure probabilities and error types differ per task
type so that dashboards and alerts have something to show.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from taskiq_monitor.demo.tasks import TIMEOUT_TASK_SECONDS


@dataclass(frozen=True, slots=True)
class Profile:
    weight: float  # relative frequency
    median_s: float  # median duration
    sigma: float  # log-normal spread
    fail_p: float  # probability that an attempt raises
    errors: tuple[str, ...]
    make_args: Callable[[random.Random], tuple[list[Any], dict[str, Any]]]


def _msg(rng: random.Random) -> tuple[list[Any], dict[str, Any]]:
    return [rng.randint(1, 10**6)], {}


def _topic(rng: random.Random) -> tuple[list[Any], dict[str, Any]]:
    return [rng.randint(1, 500)], {}


def _user(rng: random.Random) -> tuple[list[Any], dict[str, Any]]:
    return [rng.randint(1, 20_000)], {}


def _telegram(rng: random.Random) -> tuple[list[Any], dict[str, Any]]:
    update_id = rng.randint(1, 10**9)
    # Secrets on purpose: the event pipeline must redact them before anything leaves the process.
    return [{"update_id": update_id, "message": {"text": "hello", "chat": {"id": 42}}}], {
        "bot_token": "123456:AAE-demo-bot-token-do-not-leak",
        "webhook_url": "https://bot:hunter2@hooks.example.invalid/telegram",
    }


PROFILES: dict[str, Profile] = {
    "extract_knowledge_from_messages_task": Profile(
        3,
        2.0,
        0.6,
        0.05,
        ("ExtractionError", "TimeoutError"),
        lambda r: ([[r.randint(1, 10**6) for _ in range(5)]], {}),
    ),
    "extract_topic_and_atoms_task": Profile(2, 1.5, 0.6, 0.04, ("ExtractionError",), _topic),
    "generate_topic_summary_task": Profile(1, 3.0, 0.5, 0.03, ("UpstreamRateLimited",), _topic),
    "score_message_task": Profile(10, 0.08, 0.5, 0.02, ("ValueError",), _msg),
    "save_telegram_message": Profile(12, 0.02, 0.4, 0.01, ("KeyError",), _telegram),
    "classify_message_intent_task": Profile(6, 0.3, 0.5, 0.03, ("UpstreamRateLimited",), _msg),
    "detect_language_task": Profile(6, 0.01, 0.3, 0.005, ("ValueError",), _msg),
    "embed_message_task": Profile(8, 0.15, 0.4, 0.02, ("ConnectionError",), _msg),
    "update_user_profile_task": Profile(3, 0.05, 0.4, 0.01, ("KeyError",), _user),
    "recompute_topic_clusters_task": Profile(0.5, 5.0, 0.4, 0.05, ("ValueError",), lambda r: ([r.randint(1, 9)], {})),
    "send_digest_email_task": Profile(1, 0.2, 0.3, 0.0, (), _user),
    "sync_calendar_events_task": Profile(1, 0.4, 0.9, 0.0, (), _user),
    "cleanup_expired_sessions_task": Profile(0.3, 0.5, 0.3, 0.0, (), lambda r: ([], {})),
    "rebuild_search_index_task": Profile(
        0.2, 8.0, 0.3, 0.1, ("ConnectionError",), lambda r: ([r.choice(["messages", "topics"])], {})
    ),
    "generate_daily_report_task": Profile(0.2, 1.0, 0.3, 0.02, ("ValueError",), lambda r: (["2026-11-28"], {})),
}


def next_task(rng: random.Random) -> tuple[str, list[Any], dict[str, Any]]:
    """Pick the next task and its arguments (including ``sim``) according to the profiles."""
    names = list(PROFILES)
    name = rng.choices(names, weights=[PROFILES[n].weight for n in names])[0]
    profile = PROFILES[name]
    args, kwargs = profile.make_args(rng)
    sim: dict[str, Any] = {"sleep": round(rng.lognormvariate(0, profile.sigma) * profile.median_s, 4)}
    if profile.errors and rng.random() < profile.fail_p:
        sim["fail"] = rng.choice(profile.errors)
    if name == "send_digest_email_task" and rng.random() < 0.3:
        sim["fail_attempts"] = rng.choice([1, 2])  # the SMTP relay flaps; the retry middleware recovers
    if name == "sync_calendar_events_task" and rng.random() < 0.15:
        sim["sleep"] = TIMEOUT_TASK_SECONDS * 2  # a provider hangs; the timeout label cuts it off
    kwargs["sim"] = sim
    return name, args, kwargs


async def enqueue_workload(stop_at: float | None, rate: float, rng: random.Random, stopping: asyncio.Event) -> int:
    """Enqueue the workload at ``rate`` tasks/s on the (started) demo broker until ``stop_at`` (monotonic) or
    ``stopping``; return the number enqueued. Shared by ``taskiq-monitor demo`` and the compose stack's producer."""
    from taskiq_monitor.demo.tasks import broker

    sent = 0
    interval = 1.0 / rate
    next_at = time.monotonic()
    while not stopping.is_set() and (stop_at is None or time.monotonic() < stop_at):
        name, args, kwargs = next_task(rng)
        task = broker.find_task(name)
        if task is not None:
            await task.kiq(*args, **kwargs)
            sent += 1
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=delay)
    return sent
