"""The demo's *application side*: enqueues the 15-task workload into Redis and serves the enqueue metrics.

This is what the compose stack runs as its ``app`` service (Prometheus job ``taskiq-app``), next to a ``worker``
service running ``taskiq-monitor worker taskiq_monitor.demo.tasks:broker``. It plays the part of your web app: it
calls ``.kiq()`` (so ``taskiq_tasks_enqueued_total`` and the ``pending`` events come from here) and exposes
``/metrics`` and ``/healthz`` of this single process::

    TASKIQ_MONITOR_DEMO_BROKER_URL=redis://localhost:6379/0 python -m taskiq_monitor.demo.producer --port 9809
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import sys
import time
from collections.abc import Sequence

from taskiq_monitor.demo.options import check_redis, check_workload_options, redis_address
from taskiq_monitor.errors import ConfigError
from taskiq_monitor.settings import Settings, load_settings
from taskiq_monitor.tail import default_url

DEFAULT_APP_PORT = 9809


async def run_producer(settings: Settings, *, rate: float, duration: float | None, seed: int | None) -> int:
    from taskiq.exceptions import SendTaskError

    from taskiq_monitor.demo.tasks import broker
    from taskiq_monitor.demo.workload import enqueue_workload
    from taskiq_monitor.service.app import create_app
    from taskiq_monitor.service.server import start_server

    server, serve_task = await start_server(
        create_app(settings), settings.host, settings.port, settings.live_compression
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    broker_url = str(settings.demo_broker_url)
    print(
        # The address only: the broker URL may carry a password.
        f"taskiq-monitor demo producer: {rate:g} tasks/s into the Redis at {redis_address(broker_url)}; "
        f"metrics on {default_url(settings.host, settings.port)}/metrics",
        file=sys.stderr,
        flush=True,
    )
    await broker.startup()
    try:
        stop_at = time.monotonic() + duration if duration else None
        try:
            sent = await enqueue_workload(stop_at, rate, random.Random(seed), stopping)
        except SendTaskError as exc:  # Redis went away after the check: one line, not taskiq's traceback
            raise ConfigError(f"lost the Redis at {redis_address(broker_url)}: {exc.__cause__ or exc}") from None
        print(f"taskiq-monitor demo producer: enqueued {sent} tasks", file=sys.stderr, flush=True)
    finally:
        await broker.shutdown()
        server.should_exit = True
        await serve_task
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m taskiq_monitor.demo.producer", description=__doc__)
    parser.add_argument("--host", default=None, help="bind address of /metrics (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_APP_PORT, help=f"port (default {DEFAULT_APP_PORT})")
    parser.add_argument("--rate", type=float, default=5.0, help="tasks enqueued per second (default 5)")
    parser.add_argument("--duration", type=float, default=None, help="stop after S seconds (default: never)")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        check_workload_options(rate=args.rate, duration=args.duration)
        settings = load_settings(host=args.host, port=args.port)
    except ConfigError as exc:  # one line, as the taskiq-monitor commands: a mistake, not a bug
        print(f"producer: {exc}", file=sys.stderr)
        return 2
    if not settings.demo_broker_url:
        print("producer: set TASKIQ_MONITOR_DEMO_BROKER_URL=redis://…", file=sys.stderr)
        return 2
    try:
        check_redis(settings.demo_broker_url, "TASKIQ_MONITOR_DEMO_BROKER_URL")
        return asyncio.run(run_producer(settings, rate=args.rate, duration=args.duration, seed=args.seed))
    except ConfigError as exc:
        print(f"producer: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
