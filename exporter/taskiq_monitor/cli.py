"""``taskiq-monitor`` command line.

Commands: see ``USAGE`` below (the README's command table repeats it, and a test keeps the two and the parsers
in step).

``worker`` runs ``taskiq worker`` with every option you pass through unchanged, prepares the shared metrics
directory *before* any worker process imports prometheus_client, and serves ``/metrics`` for all of them from the
supervising process. ``serve`` is the same endpoint as a sidecar for your own ``taskiq worker`` command.

This module must not import prometheus_client at import time: ``worker`` sets ``PROMETHEUS_MULTIPROC_DIR`` first.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from taskiq_monitor.brokerspec import app_dir_of, check_broker_spec
from taskiq_monitor.errors import ConfigError, UsageError
from taskiq_monitor.multiproc import default_metrics_dir
from taskiq_monitor.parentdeath import exit_with_parent
from taskiq_monitor.securedir import ensure_private_dir
from taskiq_monitor.settings import REDIS_URL_SCHEMES, Settings, load_settings
from taskiq_monitor.tail import default_url

logger = logging.getLogger(__name__)
EXIT_USAGE = 2


def _parser(
    command: str, description: str, prefix: str = "", host: str = "bind address", port: str = "port"
) -> argparse.ArgumentParser:
    """The parser of one command with its ``--host``/``--port`` (``--metrics-host``… with a prefix), their defaults
    named from ``Settings``, where they live."""
    parser = argparse.ArgumentParser(prog=f"taskiq-monitor {command}", description=description)
    fields = Settings.model_fields
    parser.add_argument(f"--{prefix}host", help=f"{host} (default {fields['host'].default})")
    parser.add_argument(f"--{prefix}port", type=int, help=f"{port}, 1-65535 (default {fields['port'].default})")
    return parser


def _warn_if_open(settings: Settings) -> None:
    """Log a warning when the exporter listens beyond this host with no bearer token.

    Off loopback anyone who reaches the port reads the metrics, the task events with their (redacted) parameters
    and tracebacks, and the dashboard; binding 0.0.0.0 in a container is common and easy to forget.
    """
    from taskiq_monitor.service.hosts import is_loopback  # stdlib only: no prometheus_client

    if settings.bearer_token is None and settings.host != "localhost" and not is_loopback(settings.host):
        logger.warning(
            "the exporter listens on %s:%s, reachable from the network, without a bearer token: anyone who reaches "
            "it reads the metrics, task events and dashboard; set TASKIQ_MONITOR_BEARER_TOKEN",
            settings.host,
            settings.port,
        )


# -- worker --
# Forwarded to taskiq: INT/TERM stop gracefully (running tasks finish), HUP reloads the worker processes.
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


async def _run_worker(settings: Settings, taskiq_args: list[str]) -> int:
    from taskiq_monitor.metricsdir import claim_directory
    from taskiq_monitor.service.app import create_app
    from taskiq_monitor.service.server import start_server

    if settings.metrics_dir is None:  # _settings() always sets it for the worker command
        raise ConfigError("the worker command needs a metrics directory")
    # Bind first: a second start on the same port must fail before it touches the running instance's directory.
    server, serve_task = await start_server(
        create_app(settings), settings.host, settings.port, settings.live_compression
    )
    try:
        # Locked until this supervisor ends: a second supervisor on the same directory is refused, not wiped into it.
        claim = claim_directory(settings.metrics_dir, wipe=True)
    except ConfigError:
        server.should_exit = True
        await serve_task
        raise
    try:
        return await _supervise(settings, taskiq_args)
    finally:
        server.should_exit = True
        await serve_task
        claim.release()


async def _supervise(settings: Settings, taskiq_args: list[str]) -> int:
    print(
        f"taskiq-monitor: metrics of all worker processes on {_base_url(settings)}/metrics "
        f"(directory {settings.metrics_dir})",
        file=sys.stderr,
        flush=True,
    )
    _print_dashboard(settings)
    loop = asyncio.get_running_loop()
    child: list[asyncio.subprocess.Process] = []
    received: list[int] = []

    def forward(sig: int) -> None:
        if child and child[0].returncode is None:
            child[0].send_signal(sig)
        else:
            received.append(sig)  # arrived before the child existed: delivered right after it starts

    # Handlers before the child exists, so that no signal falls back to the default action (exit, orphaning it).
    for sig in FORWARDED_SIGNALS:
        loop.add_signal_handler(sig, forward, sig)
    try:
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(settings.metrics_dir))
        # Tied to this process: if it is SIGKILLed, taskiq still gets SIGTERM and stops its workers, instead of
        # running on, orphaned, into a directory the next supervisor wipes (parentdeath.py).
        command = exit_with_parent([sys.executable, "-m", "taskiq", "worker", *taskiq_args])
        child.append(await asyncio.create_subprocess_exec(*command, env=env))
        for pending in received:
            child[0].send_signal(pending)
        code = await child[0].wait()
    finally:
        for sig in FORWARDED_SIGNALS:
            loop.remove_signal_handler(sig)
    return code


def _base_url(settings: Settings) -> str:
    return default_url(settings.host, settings.port)


def _print_dashboard(settings: Settings) -> None:
    # The first thing a new user looks for; without Redis it cannot see other processes' tasks, and says so here
    # rather than as an empty page.
    note = "" if settings.redis_url else " (set TASKIQ_MONITOR_REDIS_URL to see the workers' tasks there)"
    print(f"taskiq-monitor: web dashboard on {_base_url(settings)}/{note}", file=sys.stderr, flush=True)


def cmd_worker(argv: Sequence[str]) -> int:
    parser = _parser(
        "worker",
        "Run `taskiq worker` with one /metrics endpoint for all its processes. "
        "Every option not listed here is passed to `taskiq worker` unchanged.",
        "metrics-",
        host="address of /metrics",
        port="port of /metrics",
    )
    parser.usage = "taskiq-monitor worker MODULE:BROKER [taskiq worker options] [options]"
    parser.epilog = "taskiq's worker options (passed through): taskiq worker --help"
    parser.add_argument(
        "--metrics-dir", type=Path, help="multiprocess directory, one per supervisor (metric files wiped at start)"
    )
    ours, rest = parser.parse_known_args(argv)
    if not rest or rest[0].startswith("-"):
        raise UsageError("worker needs the broker first, e.g. `taskiq-monitor worker app.tasks:broker --workers 2`")
    settings = load_settings(host=ours.metrics_host, port=ours.metrics_port, metrics_dir=ours.metrics_dir)
    if settings.metrics_dir is None:
        settings.metrics_dir = default_metrics_dir(settings.port)
    _warn_if_open(settings)
    if settings.workers_ship_to_loki:
        # Every worker process spools Loki batches there: a directory another user controls is refused now, once,
        # rather than left unused (with a warning) by each child.
        from taskiq_monitor.sinks.loki import default_spool_dir

        ensure_private_dir(settings.loki_spool_dir or default_spool_dir(), what="Loki spool directory")
    # Last of the checks (it imports the application, the slowest), before the port or the directory is touched.
    check_broker_spec(rest[0], app_dir_of(rest[1:]))
    return asyncio.run(_run_worker(settings, rest))


# -- serve --
async def _serve(settings: Settings) -> int:
    from taskiq_monitor.service.app import create_app
    from taskiq_monitor.service.server import start_server

    server, serve_task = await start_server(
        create_app(settings), settings.host, settings.port, settings.live_compression
    )
    print(f"taskiq-monitor: serving {_base_url(settings)}/metrics", file=sys.stderr, flush=True)
    if settings.exporter_ships_to_loki:
        print(
            "taskiq-monitor: shipping the task events of the Redis stream to Loki (loki_shipper=exporter)",
            file=sys.stderr,
            flush=True,
        )
    _print_dashboard(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    await serve_task
    return 0


def cmd_serve(argv: Sequence[str]) -> int:
    parser = _parser(
        "serve",
        "Serve /metrics for the worker processes writing to a multiprocess directory (sidecar). "
        "Start your workers with PROMETHEUS_MULTIPROC_DIR set to the same, empty, directory.",
    )
    parser.add_argument("--metrics-dir", type=Path, help="the workers' PROMETHEUS_MULTIPROC_DIR")
    args = parser.parse_args(argv)
    settings = load_settings(host=args.host, port=args.port, metrics_dir=args.metrics_dir)
    _warn_if_open(settings)
    if settings.metrics_dir is None:
        return asyncio.run(_serve(settings))
    from taskiq_monitor.metricsdir import claim_directory

    with claim_directory(settings.metrics_dir, wipe=False):
        return asyncio.run(_serve(settings))


# -- demo --
def cmd_demo(argv: Sequence[str]) -> int:
    parser = _parser(
        "demo",
        "Run 15 demo task types and the exporter. Without --broker everything runs in this process "
        "(no external service); with --broker redis://… real worker processes consume from Redis.",
    )
    parser.add_argument("--duration", type=float, default=None, help="stop after S seconds (default: run forever)")
    parser.add_argument("--rate", type=float, default=20.0, help="tasks enqueued per second (default 20)")
    parser.add_argument("--broker", help="redis://host:port/db to use a real Redis broker and worker processes")
    parser.add_argument("--workers", type=int, default=2, help="worker processes with --broker (default 2)")
    parser.add_argument("--seed", type=int, default=None, help="random seed of the workload")
    args = parser.parse_args(argv)
    from taskiq_monitor.demo.options import check_workload_options

    check_workload_options(rate=args.rate, duration=args.duration)
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.broker is not None and not args.broker.strip().startswith(REDIS_URL_SCHEMES):
        # Never the value: a broker URL may carry a password.
        raise UsageError("--broker must be a redis://, rediss:// or unix:// URL, e.g. redis://localhost:6379/0")
    settings = load_settings(host=args.host, port=args.port, demo_broker_url=args.broker)
    if not settings.demo_broker_url:
        _warn_if_open(settings)  # with a broker, the `worker` command the demo starts serves, and warns
    from taskiq_monitor.demo.runner import run_demo

    return run_demo(settings, duration=args.duration, rate=args.rate, workers=args.workers, seed=args.seed)


def cmd_tail(argv: Sequence[str]) -> int:
    from taskiq_monitor.tail import cmd_tail as run_tail

    return run_tail(argv)


def _version() -> str:
    try:
        return importlib.metadata.version("taskiq-monitor")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree (PYTHONPATH=exporter), not installed
        return "unknown (not installed)"


USAGE = """usage:
  taskiq-monitor worker MODULE:BROKER [taskiq worker options] [--metrics-host H] [--metrics-port P] [--metrics-dir D]
  taskiq-monitor serve [--host H] [--port P] [--metrics-dir D]
  taskiq-monitor demo [--host H] [--port P] [--duration S] [--rate R] [--broker redis://…] [--workers N] [--seed N]
  taskiq-monitor tail [--url U] [--task-name T]… [--status S]… [--last-event-id ID] [--count N] [--summary] [--no-color]
  taskiq-monitor --version
Run `taskiq-monitor COMMAND --help` for details (`taskiq worker --help` for taskiq's worker options)."""

COMMANDS = {"worker": cmd_worker, "serve": cmd_serve, "demo": cmd_demo, "tail": cmd_tail}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stderr)
        return 0 if argv else EXIT_USAGE
    if argv[0] == "--version":
        print(f"taskiq-monitor {_version()}")
        return 0
    command = COMMANDS.get(argv[0])
    if command is None:
        print(f"taskiq-monitor: unknown command {argv[0]!r}; use one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return command(argv[1:])
    except ConfigError as exc:
        print(f"taskiq-monitor {argv[0]}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
