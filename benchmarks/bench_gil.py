"""What the sinks' threads cost the event loop through the GIL, side by side in one process.

CPython hands the GIL over when the thread holding it makes a system call. A sink's thread that has work waits for
the GIL; every release by the loop then wakes it (a futex wake-up, paid by the loop in system time), and the loop
takes the GIL back before the woken thread can: the thread makes little progress while the loop pays for waking it
(the "convoy effect"). A loop with no system call never releases the GIL and never pays this; a worker's loop makes
several per message (its broker client's socket).

Three configurations of ``bench_middleware``'s worker side, the task making one socket round trip, run interleaved:
the state store's flusher thread running (as shipped), the same with the flusher parked (never runs: its buffer
only grows; what the loop pays without a thread waiting for the GIL), and metrics only. Per configuration, per task:
the loop's user and system CPU (``getrusage(RUSAGE_THREAD)``), the flusher's voluntary context switches (each a
wait for the GIL or for work), and the flusher buffer's peak. Both at saturation (the loop never idles) and paced
(the loop about half busy). Usage::

    python benchmarks/bench_gil.py [--tasks 10000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# bench_middleware first: it sets up the multiprocess metrics directory before prometheus_client is imported.
import bench_middleware as bench
from taskiq_monitor.sinks.state import StateSink

_RUN = StateSink._run
_NEXT_BATCH = StateSink._next_batch
_flusher: dict[str, float] = {}
_parked = threading.Event()


def _measured_run(self: StateSink) -> None:
    if _parked.is_set():
        self._stop.wait()  # parked: never touches the GIL until stop() (then _drain flushes nothing we count)
        return
    before = resource.getrusage(resource.RUSAGE_THREAD)
    try:
        _RUN(self)
    finally:
        after = resource.getrusage(resource.RUSAGE_THREAD)
        _flusher["switches"] = _flusher.get("switches", 0) + after.ru_nvcsw - before.ru_nvcsw


def _measured_next_batch(self: StateSink) -> Any:
    _flusher["peak"] = max(_flusher.get("peak", 0), len(self._buffer))
    return _NEXT_BATCH(self)


StateSink._run = _measured_run  # type: ignore[method-assign]
StateSink._next_batch = _measured_next_batch  # type: ignore[method-assign]


def _one(config: str, n: int, parked: bool, pace: bool) -> tuple[float, float, float, float]:
    """(loop user µs, loop system µs, flusher switches, flusher buffer peak) per task."""
    if parked:
        _parked.set()
    _flusher.clear()
    before = resource.getrusage(resource.RUSAGE_THREAD)
    asyncio.run(bench.worker_side(config, n, "noop_io", pace=pace))
    after = resource.getrusage(resource.RUSAGE_THREAD)
    if parked:
        _parked.clear()
        for middleware in bench._INSTANCES.get(config, []):
            for sink in getattr(middleware, "sinks", []):
                if isinstance(sink, StateSink):
                    sink._buffer.clear()  # what the parked flusher never took: not the next run's work
    user = (after.ru_utime - before.ru_utime) / n * 1e6
    system = (after.ru_stime - before.ru_stime) / n * 1e6
    return user, system, _flusher.get("switches", 0) / n, _flusher.get("peak", 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import logging

    logging.disable(logging.CRITICAL)
    rows = (
        ("metrics only", bench.METRICS_ONLY, False),
        ("+ events: state store, flusher running", bench.EVENTS_STATE, False),
        ("+ events: state store, flusher parked", bench.EVENTS_STATE, True),
    )
    print(f"python {sys.version.split()[0]}, {args.tasks} tasks x {args.rounds} rounds, a socket round trip per task")
    for pace in (False, True):
        for _, config, parked in rows:
            _one(config, 2000, parked, pace)  # warm-up
        samples: dict[str, list[tuple[float, float, float, float]]] = {}
        for _ in range(args.rounds):
            for label, config, parked in rows:
                samples.setdefault(label, []).append(_one(config, args.tasks, parked, pace))
        title = "loop about half busy" if pace else "saturated (the loop never idles)"
        print(f"\n{title} — per task, median of {args.rounds} rounds:")
        print(
            f"  {'configuration':42} {'loop user µs':>13} {'loop sys µs':>12} {'flusher waits':>14} {'buffer peak':>12}"
        )
        for label, runs in samples.items():
            user, system, switches, peak = (statistics.median(r[i] for r in runs) for i in range(4))
            print(f"  {label:42} {user:13.1f} {system:12.1f} {switches:14.3f} {peak:12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
