"""Checks of the demo's options, shared by ``taskiq-monitor demo`` and the compose stack's producer: the workload's
flags, and the broker's Redis (checked before anything announces itself, named without its password).

A leaf module on purpose: ``demo.workload`` imports ``demo.tasks``, which builds the broker from the settings at
import, and the demo must check its flags before it decides which broker that is.
"""

from __future__ import annotations

import math
import urllib.parse

from taskiq_monitor.errors import UsageError


def check_workload_options(*, rate: float, duration: float | None) -> None:
    """Raise :class:`UsageError` unless ``rate`` (tasks/s) is finite and positive and ``duration`` (s), when given,
    too.

    argparse's ``float`` takes ``nan`` and ``inf``. With either, the enqueue loop's pause is NaN or 0, so it never
    waits: it starves the event loop (measured: 16 570 tasks in 2 s, the in-memory workers never ran them, and they
    ended as "Task was destroyed but it is pending"). An infinite duration is "forever", which is the default.
    """
    if not (math.isfinite(rate) and rate > 0):
        raise UsageError("--rate must be a positive number of tasks per second")
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise UsageError("--duration must be a positive number of seconds")


def redis_address(url: str) -> str:
    """Where ``url`` points (``host:port`` or the socket path), for messages: never its password."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    host = f"[{parts.hostname}]" if parts.hostname and ":" in parts.hostname else parts.hostname
    return f"{host or 'localhost'}:{parts.port or 6379}"


def check_redis(url: str, what: str) -> None:
    """Raise :class:`UsageError` unless the Redis at ``url`` (``what`` names where it was set) answers a PING within
    a few seconds.

    Checked before worker processes start and before any banner: otherwise the demo announces a dashboard, then its
    first ``.kiq()`` ends in taskiq's SendTaskError traceback, while the workers retry in the background.
    """
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=3)
    except ValueError as exc:  # redis-py's messages name the part that is wrong, not the URL
        raise UsageError(f"{what} is not a usable Redis URL: {exc}") from None
    try:
        client.ping()
    except redis.RedisError as exc:
        raise UsageError(f"cannot reach the Redis of {what} at {redis_address(url)}: {exc}") from None
    finally:
        client.close()
