"""Does the Redis state flusher keep up beside a saturated event loop? Two record compressors, side by side.

The flusher thread compresses each finished history record (``store.history.encode_record``). Python's ``zlib``
module releases the GIL twice per record; beside a loop that never idles, each release hands the GIL to the loop and
the flusher waits for the loop's switch interval to get it back. ``store.deflate`` calls the same zlib through
``ctypes.PyDLL`` and keeps the GIL. This script shows what that changes, in one process, in interleaved rounds:

1. **one record**, compressed alone and beside a thread that spins in Python (the loop's stand-in): the
   compressing thread's CPU and wall time per record;
2. **a saturated worker**: the real middleware with the Redis state store (a throw-away ``redis-server`` on a free
   port; needs it on PATH) and **default** settings (buffer and queue sizes), ``--tasks`` tasks run back to back by
   taskiq's receiver; then the same with Loki shipping on too (the defaults: a Loki push-protocol double in a
   separate process, ``bench_loki.Receiver``). Reported per compressor (medians of ``--rounds``): events the state
   flusher wrote while the loop was busy, events dropped by either sink (a buffer full), total CPU per task (the
   threads' included, until they have handled everything) and the loop's wall time per task.

Usage::

    PYTHONPATH=exporter python benchmarks/bench_busy_loop.py [--tasks 20000] [--rounds 3]
"""

from __future__ import annotations

import os
import tempfile

# Must precede every prometheus_client import (the value class is chosen at import time).
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-busy-loop-"))

import argparse
import asyncio
import logging
import shutil
import statistics
import sys
import threading
import time
from typing import Any

from taskiq import InMemoryBroker, TaskiqMessage
from taskiq.receiver import Receiver

from taskiq_monitor.metrics import LOG_DROPPED
from taskiq_monitor.middleware import MonitoringMiddleware
from taskiq_monitor.settings import Settings
from taskiq_monitor.sinks.loki import LokiSink
from taskiq_monitor.sinks.state import StateSink
from taskiq_monitor.store import deflate, history

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_loki import Receiver as LokiDouble
from redis_server import start_redis

STATE = "Redis state"
STATE_LOKI = "Redis state + Loki"
ZLIB = "zlib module (releases the GIL)"
HELD = "store.deflate (keeps the GIL)"
# A finished record of a small task, as encode_record builds it (positional JSON, times as offsets).
RECORD = (
    b'["noop",1796185740.706367,0.0,0.000018,0.001701,0.001654,0.000018,"vm",27310,[0],'
    b'{"options":{"lang":"en","retries":2}},{"taskiq_monitor_enqueued_at":1796185740.7063673}]'
)


def _use(compressor: str, lib: Any) -> None:
    deflate._LIB = lib if compressor == HELD else None  # packer_for() then returns None: zlib's module is used


def _one_record(n: int) -> tuple[float, float]:
    """µs of the compressing thread's CPU and of wall time per record."""
    wbits = history._window_bits(len(RECORD))
    cpu, wall = time.thread_time(), time.perf_counter()
    for _ in range(n):
        compress = deflate.packer_for(wbits, history.ZDICT)
        if compress is not None:
            compress(RECORD)
        else:
            packer = history._packer(wbits)
            packer.compress(RECORD) + packer.flush()
    return (time.thread_time() - cpu) / n * 1e6, (time.perf_counter() - wall) / n * 1e6


def _beside_spinner(n: int) -> tuple[float, float]:
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            sum(range(100))

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    time.sleep(0.05)
    try:
        return _one_record(n)
    finally:
        stop.set()
        spinner.join()


async def _saturated(url: str, n: int, loki: LokiDouble | None, spool: str) -> dict[str, float]:
    """One round: fresh sinks with the default settings (their own key prefix), ``n`` tasks back to back."""
    settings = Settings(
        redis_url=url,
        state_key_prefix=f"bench{time.monotonic_ns()}",
        loki_url=loki.url if loki else None,
        loki_spool_dir=spool,
    )
    sink = StateSink(settings)
    sinks: list[Any] = [sink]
    if loki is not None:
        sinks.append(LokiSink(settings))
    broker = InMemoryBroker(await_inplace=True).with_middlewares(MonitoringMiddleware(settings, sinks=sinks))
    broker.is_worker_process = True

    @broker.task(task_name="noop")
    async def noop(x: int, options: dict[str, Any] | None = None) -> int:
        return x

    receiver = Receiver(broker, run_startup=False)
    messages = [
        broker.formatter.dumps(
            TaskiqMessage(
                task_id=f"t{i}",
                task_name="noop",
                labels={"taskiq_monitor_enqueued_at": time.time()},
                args=[i],
                kwargs={"options": {"lang": "en", "retries": 2}},
            )
        ).message
        for i in range(n)
    ]
    for middleware in broker.middlewares:
        if isinstance(middleware, MonitoringMiddleware):
            await middleware.startup()
    written_before, dropped_before = sink.written, sink.dropped
    # Loki's counters are per process (shared by the rounds' sinks): read before and after.
    shipped_before = sinks[1].metrics.by_result[LOG_DROPPED]._value.get() if loki is not None else 0.0
    cpu, start = time.process_time(), time.perf_counter()
    for raw in messages:
        await receiver.callback(raw)
    wall = time.perf_counter() - start
    written_busy = sink.written - written_before
    sink.stop(60)  # writes what is buffered: its CPU belongs to the tasks
    shipped = 0.0
    if len(sinks) > 1:
        await sinks[1].close()  # ships what is queued (bounded), as at a worker's shutdown
        shipped = sinks[1].metrics.by_result[LOG_DROPPED]._value.get() - shipped_before
    total = time.process_time() - cpu
    sink.writer.close()
    dropped = sink.dropped - dropped_before + shipped
    return {
        "events": sink.written - written_before + dropped,
        "written while busy": written_busy,
        "dropped": dropped,
        "total CPU µs/task": total / n * 1e6,
        "loop wall µs/task": wall / n * 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records", type=int, default=3_000, help="records per one-record measurement")
    args = parser.parse_args()
    if args.tasks < 1 or args.rounds < 1 or args.records < 1:
        parser.error("--tasks, --rounds and --records must be at least 1")
    lib = deflate._library()
    if lib is None:
        raise SystemExit("zlib cannot be loaded through ctypes here: nothing to compare")
    logging.disable(logging.CRITICAL)
    compressors = (ZLIB, HELD)
    alone: dict[str, list[tuple[float, float]]] = {c: [] for c in compressors}
    beside: dict[str, list[tuple[float, float]]] = {c: [] for c in compressors}
    rounds: dict[tuple[str, str], list[dict[str, float]]] = {}
    started = start_redis()
    if started is None:
        raise SystemExit("redis-server is not on PATH, or did not start")
    server, url = started
    loki = LokiDouble()
    spool = tempfile.mkdtemp(prefix="bench-busy-loop-spool-")
    try:
        for _ in range(args.rounds):
            for compressor in compressors:
                _use(compressor, lib)
                alone[compressor].append(_one_record(args.records))
                beside[compressor].append(_beside_spinner(max(1, args.records // 3)))
                for config, double in ((STATE, None), (STATE_LOKI, loki)):
                    sample = asyncio.run(_saturated(url, args.tasks, double, spool))
                    rounds.setdefault((config, compressor), []).append(sample)
    finally:
        deflate._LIB = lib
        loki.stop()
        server.terminate()
        server.wait(10)
        shutil.rmtree(spool, ignore_errors=True)
    print(f"python {sys.version.split()[0]}, medians of {args.rounds} rounds, load {os.getloadavg()[0]:.2f}")
    print(f"\none {len(RECORD)}-byte record (µs per record: the compressing thread's CPU / wall):")
    for compressor in compressors:
        a = [statistics.median(x[i] for x in alone[compressor]) for i in (0, 1)]
        b = [statistics.median(x[i] for x in beside[compressor]) for i in (0, 1)]
        print(f"  {compressor:32} alone {a[0]:7.2f} / {a[1]:8.2f}   beside a busy thread {b[0]:7.2f} / {b[1]:8.2f}")
    print(f"\nsaturated worker, default settings, {args.tasks} tasks back to back:")
    keys = ("events", "written while busy", "dropped", "total CPU µs/task", "loop wall µs/task")
    print(f"  {'sinks, compressor':64} " + " ".join(f"{k:>19}" for k in keys))
    for (config, compressor), samples in rounds.items():
        medians = [statistics.median(r[k] for r in samples) for k in keys]
        print(f"  {config + ', ' + compressor:64} " + " ".join(f"{v:19.1f}" for v in medians))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
