"""Per-task overhead of monitoring, side by side in one process: bare taskiq, taskiq's PrometheusMiddleware,
and taskiq-monitor's MonitoringMiddleware — with the multiprocess metrics directory active, as in production.

Two paths are measured:

* worker side: ``Receiver.callback(message_bytes)`` — what a worker process does per message;
* end to end: ``.kiq()`` on ``InMemoryBroker(await_inplace=True)`` — send hooks + worker hooks.

Configurations run interleaved in rounds (A B C A B C …) and the median round is reported, so that a noisy
neighbour slows all three alike. Usage::

    python benchmarks/bench_middleware.py [--tasks 20000] [--rounds 7]
"""

from __future__ import annotations

import os
import tempfile

# Must precede every prometheus_client import (the value class is chosen at import time).
_METRICS_DIR = tempfile.mkdtemp(prefix="bench-taskiq-monitor-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _METRICS_DIR

import argparse  # noqa: E402
import asyncio  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from prometheus_client import values  # noqa: E402
from taskiq import AsyncBroker, InMemoryBroker, TaskiqMessage  # noqa: E402
from taskiq.middlewares.prometheus_middleware import PrometheusMiddleware  # noqa: E402
from taskiq.receiver import Receiver  # noqa: E402

from taskiq_monitor.middleware import MonitoringMiddleware  # noqa: E402
from taskiq_monitor.settings import Settings  # noqa: E402

CONFIGS: dict[str, Callable[[], list[Any]]] = {
    "bare taskiq": lambda: [],
    "taskiq PrometheusMiddleware": lambda: [PrometheusMiddleware(server_port=0)],
    "taskiq-monitor MonitoringMiddleware": lambda: [MonitoringMiddleware(Settings(), sinks=[])],
}


_INSTANCES: dict[str, list[Any]] = {}


def build(config: str, await_inplace: bool) -> tuple[AsyncBroker, Any]:
    # One middleware instance per configuration: taskiq's PrometheusMiddleware registers its metrics on the
    # global registry in __init__ and cannot be constructed twice.
    if config not in _INSTANCES:
        _INSTANCES[config] = CONFIGS[config]()
    broker = InMemoryBroker(await_inplace=await_inplace).with_middlewares(*_INSTANCES[config])

    @broker.task(task_name="noop")
    async def noop(x: int) -> int:
        return x

    return broker, noop


async def worker_side(config: str, n: int) -> float:
    broker, _ = build(config, await_inplace=True)
    broker.is_worker_process = True
    receiver = Receiver(broker, run_startup=False)
    messages = [
        broker.formatter.dumps(
            TaskiqMessage(
                task_id=f"t{i}",
                task_name="noop",
                labels={"taskiq_monitor_enqueued_at": time.time()},
                args=[i],
                kwargs={},
            )
        ).message
        for i in range(n)
    ]
    for mw in broker.middlewares:
        if isinstance(mw, MonitoringMiddleware):
            await mw.startup()  # no HTTP server: taskiq's PrometheusMiddleware.startup would bind a port
    start = time.perf_counter()
    for raw in messages:
        await receiver.callback(raw)
    return (time.perf_counter() - start) / n


async def end_to_end(config: str, n: int) -> float:
    broker, noop = build(config, await_inplace=True)
    await broker.startup()
    start = time.perf_counter()
    for i in range(n):
        await noop.kiq(i)
    elapsed = time.perf_counter() - start
    await broker.shutdown()
    return elapsed / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    assert values.ValueClass is not values.MutexValue, "multiprocess mode must be active"
    print(f"python {sys.version.split()[0]}, {args.tasks} tasks x {args.rounds} rounds, multiprocess dir active")
    results: dict[str, dict[str, list[float]]] = {"worker side": {}, "end to end (.kiq)": {}}
    for path, fn in (("worker side", worker_side), ("end to end (.kiq)", end_to_end)):
        asyncio.run(fn("bare taskiq", 2000))  # warm-up
        for _ in range(args.rounds):
            for config in CONFIGS:
                results[path].setdefault(config, []).append(asyncio.run(fn(config, args.tasks)))
    for path, per_config in results.items():
        print(f"\n{path}:")
        bare = statistics.median(per_config["bare taskiq"])
        print(f"  {'configuration':38} {'µs/task':>9} {'tasks/s':>10} {'overhead µs':>12} {'throughput':>11}")
        overheads = {}
        for config, samples in per_config.items():
            med = statistics.median(samples)
            overheads[config] = med - bare
            print(f"  {config:38} {med * 1e6:9.2f} {1 / med:10.0f} {(med - bare) * 1e6:12.2f} {bare / med:10.2f}x")
        ours = overheads["taskiq-monitor MonitoringMiddleware"]
        theirs = overheads["taskiq PrometheusMiddleware"]
        print(f"  overhead ratio MonitoringMiddleware / PrometheusMiddleware: {ours / theirs:.2f}")
    shutil.rmtree(_METRICS_DIR, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
