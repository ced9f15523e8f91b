"""``taskiq-monitor demo``: the workload plus the exporter, in one command.

In-memory mode (default) runs tasks and exporter in this process and needs no external service. Redis mode starts
``taskiq-monitor worker`` (real worker processes) and enqueues from this process into the same metrics directory,
so one endpoint shows both the enqueue side and the worker side.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from taskiq_monitor.demo.options import check_redis, redis_address
from taskiq_monitor.errors import ConfigError, UsageError
from taskiq_monitor.settings import Settings
from taskiq_monitor.tail import default_url


def _banner(settings: Settings, mode: str) -> None:
    base = default_url(settings.host, settings.port)  # an IPv6 address in brackets, or no command below would work
    print(
        f"taskiq-monitor demo ({mode}): dashboard on {base}/  (open it in a browser)\n"
        "  15 task types running.\n"
        f"  metrics:    {base}/metrics\n"
        f"  health:     {base}/api/v1/tasks  (per task type: pending, running, success rate, average duration)\n"
        f"  events:     {base}/api/v1/events?status=failed\n"
        f"  live feed:  taskiq-monitor tail --url {base}   (or WebSocket {base.replace('http', 'ws')}/ws/events)\n"
        "  Ctrl-C to stop. Full stack (Prometheus, Grafana, Loki, Alertmanager): docker compose up",
        file=sys.stderr,
        flush=True,
    )


async def _produce_until_stopped(duration: float | None, rate: float, rng: random.Random) -> int:
    """Start the demo broker (client side), enqueue until ``duration`` or SIGINT/SIGTERM, shut the broker down."""
    from taskiq_monitor.demo.tasks import broker
    from taskiq_monitor.demo.workload import enqueue_workload

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await broker.startup()
    try:
        stop_at = time.monotonic() + duration if duration else None
        return await enqueue_workload(stop_at, rate, rng, stopping)
    finally:
        await broker.shutdown()  # InMemoryBroker waits for (or cancels) its running tasks


async def _run_in_memory(settings: Settings, duration: float | None, rate: float, rng: random.Random) -> int:
    from taskiq_monitor.demo import tasks  # noqa: F401 - first: its sink creates the in-process store create_app serves
    from taskiq_monitor.service.app import create_app
    from taskiq_monitor.service.server import start_server

    server, serve_task = await start_server(
        create_app(settings), settings.host, settings.port, settings.live_compression
    )
    _banner(settings, "in-memory")
    try:
        sent = await _produce_until_stopped(duration, rate, rng)
        print(f"taskiq-monitor demo: enqueued {sent} tasks; stopping", file=sys.stderr)
    finally:
        server.should_exit = True
        await serve_task
    return 0


def _wait_for_worker(url: str, metrics_dir: Path, timeout: float, proc: subprocess.Popen[Any]) -> None:
    """Wait until the worker ``proc`` serves ``url`` (its ``/healthz``).

    The answer must name ``metrics_dir``: another exporter already on the port answers ``/healthz`` too, while the
    worker started here fails to bind and exits (its own one-line error says why).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited with code {proc.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if json.loads(response.read()).get("metrics_dir") == str(metrics_dir):
                    return
        except (OSError, ValueError, AttributeError):  # not up yet, or not our worker's answer
            pass
        time.sleep(0.1)
    raise RuntimeError(f"worker did not serve {url} within {timeout:.0f}s")


def _run_redis(settings: Settings, duration: float | None, rate: float, workers: int, rng: random.Random) -> int:
    from taskiq.exceptions import SendTaskError

    from taskiq_monitor.multiproc import default_metrics_dir

    check_redis(str(settings.demo_broker_url), "--broker")
    metrics_dir = settings.metrics_dir or default_metrics_dir(settings.port)
    # The demo's Redis also holds the shared task state (queue depth, live feed) unless told otherwise; set for
    # this process too, before demo.tasks builds its middleware.
    os.environ.setdefault("TASKIQ_MONITOR_REDIS_URL", str(settings.demo_broker_url))
    env = dict(os.environ, TASKIQ_MONITOR_DEMO_BROKER_URL=str(settings.demo_broker_url))
    cmd = [
        sys.executable,
        "-m",
        "taskiq_monitor.cli",
        "worker",
        "taskiq_monitor.demo.tasks:broker",
        "--workers",
        str(workers),
        "--metrics-host",
        settings.host,
        "--metrics-port",
        str(settings.port),
        "--metrics-dir",
        str(metrics_dir),
    ]
    worker = subprocess.Popen(cmd, env=env)
    try:
        try:
            _wait_for_worker(f"{default_url(settings.host, settings.port)}/healthz", metrics_dir, 30, worker)
        except RuntimeError as exc:
            raise UsageError(str(exc)) from None
        # Only now (the worker wiped the directory) may this process import prometheus_client in multiprocess mode:
        # its enqueue counters join the workers' on the same endpoint.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        # The demo tasks module builds its broker from settings at import: the producer must use Redis too.
        os.environ["TASKIQ_MONITOR_DEMO_BROKER_URL"] = str(settings.demo_broker_url)
        _banner(settings, f"redis, {workers} worker processes")
        try:
            sent = asyncio.run(_produce_until_stopped(duration, rate, rng))
        except SendTaskError as exc:  # Redis went away after the check: one line, not taskiq's traceback
            where = redis_address(str(settings.demo_broker_url))
            raise ConfigError(f"lost the Redis of --broker at {where}: {exc.__cause__ or exc}") from None
        print(f"taskiq-monitor demo: enqueued {sent} tasks; stopping workers", file=sys.stderr)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
    return 0


def run_demo(settings: Settings, *, duration: float | None, rate: float, workers: int, seed: int | None) -> int:
    import logging

    # taskiq logs every execution and every traceback at INFO/ERROR; the demo's point is the metrics.
    logging.getLogger("taskiq").setLevel(logging.CRITICAL)
    rng = random.Random(seed)
    if settings.demo_broker_url:
        return _run_redis(settings, duration, rate, workers, rng)
    return asyncio.run(_run_in_memory(settings, duration, rate, rng))
