"""Where a worker's monitoring CPU goes, thread by thread: the event loop, the state flusher, Loki's collector and
sender; with the cyclic garbage collector on and off; and what one push to Loki costs the sender.

``bench_middleware.py`` reports the loop's CPU and the process's total; this script splits the total by thread. It
runs the worker-side path of ``bench_middleware.py`` (serialized messages fed to ``Receiver.callback``) for five
configurations, each with the GC on and with it off (``gc.disable()`` for the round), in interleaved rounds, and
reports the median round's figures in µs per task:

* **+loop**: the event loop's CPU over bare taskiq's;
* **state**, **collector**, **sender**: each sink thread's CPU (``time.thread_time()`` taken as the thread ends: the
  state flusher at the round's drain, Loki's threads when the round parks them, which adds their shutdown, ~0.1 µs);
* **+total**: the process's CPU over bare taskiq's (as ``bench_middleware.py``'s);
* **GC collections** in the round, by the thread that paid for them, per generation (``loop 81/6/1``);
* **pushes**, and the sender's CPU per push (``Transport.post``: httpx, the request and the response).

Usage::

    PYTHONPATH=exporter python benchmarks/bench_threads.py [--tasks 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import statistics
import sys
import threading
import time
from collections import Counter
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_middleware as bm
from taskiq_monitor.sinks.loki import transport

CONFIGS = (bm.BARE, bm.PROMETHEUS, bm.METRICS_ONLY, bm.EVENTS_STATE, bm.EVENTS_STATE_LOKI)
THREADS = {  # thread name -> the column it is reported in
    "taskiq-monitor-state": "state",
    "taskiq-monitor-loki-collector": "collector",
    "taskiq-monitor-loki-sender": "sender",
}

_thread_cpu: Counter[str] = Counter()  # role -> CPU seconds of its threads that ended in this round
_collections: Counter[tuple[str, int]] = Counter()  # (role, generation) -> collections started in that thread
_posts = {"count": 0.0, "cpu": 0.0}  # Loki pushes in this round, and the sender's CPU in them


def _role() -> str:
    return THREADS.get(threading.current_thread().name, "loop")


def _instrument() -> None:
    run = threading.Thread.run

    def timed_run(self: threading.Thread) -> None:
        try:
            run(self)
        finally:
            _thread_cpu[THREADS.get(self.name, self.name)] += time.thread_time()

    threading.Thread.run = timed_run  # type: ignore[method-assign]

    post = transport.Transport.post

    def timed_post(self: transport.Transport, body: bytes, **kwargs: Any) -> tuple[str, float | None]:
        started = time.thread_time()
        try:
            return post(self, body, **kwargs)
        finally:
            _posts["count"] += 1
            _posts["cpu"] += time.thread_time() - started

    transport.Transport.post = timed_post  # type: ignore[method-assign]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            _collections[(_role(), info["generation"])] += 1

    gc.callbacks.append(on_gc)


Round = dict[str, Any]


async def _round(config: str, tasks: int, gc_on: bool) -> Round:
    _thread_cpu.clear()
    _collections.clear()
    _posts.update(count=0.0, cpu=0.0)
    if not gc_on:
        gc.disable()
    try:
        _wall, loop, total, dropped, _gcs = await bm.worker_side(config, tasks)
    finally:
        gc.enable()
    return {
        "loop": loop,
        "total": total,
        "dropped": dropped,
        "threads": {role: cpu / tasks for role, cpu in _thread_cpu.items() if role in THREADS.values()},
        "gc": dict(_collections),
        "posts": int(_posts["count"]),
        "post_cpu": _posts["cpu"] / _posts["count"] if _posts["count"] else 0.0,
    }


def _median_round(rounds: list[Round]) -> Round:
    """The round of median total CPU (its figures belong together: one round's split of one round's total)."""
    return sorted(rounds, key=lambda r: r["total"])[len(rounds) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    logging.disable(logging.CRITICAL)
    _instrument()
    variants = [(config, gc_on) for config in CONFIGS for gc_on in (True, False)]
    results: dict[tuple[str, bool], list[Round]] = {}
    load = os.getloadavg()[0]
    try:
        for config, gc_on in variants:
            asyncio.run(_round(config, 2000, gc_on))  # warm-up (and the Loki double's start)
        for _ in range(args.rounds):
            for config, gc_on in variants:
                results.setdefault((config, gc_on), []).append(asyncio.run(_round(config, args.tasks, gc_on)))
    finally:
        if bm._LOKI is not None:
            bm._LOKI.stop()
    print(
        f"python {sys.version.split()[0]}, {args.tasks} tasks x {args.rounds} rounds, worker side, load {load:.2f}; "
        "µs per task, the median round (by total CPU)"
    )
    bare = {gc_on: _median_round(results[(bm.BARE, gc_on)]) for gc_on in (True, False)}
    header = f"  {'configuration':<36} {'GC':<4} {'+loop':>6} {'state':>6} {'collector':>9} {'sender':>6}"
    print(header + f" {'+total':>7} {'dropped':>7}  {'pushes (µs each)':<17} GC collections: thread gen0/1/2")
    for config, gc_on in variants:
        if config == bm.BARE:
            continue
        r = _median_round(results[(config, gc_on)])
        base = bare[gc_on]
        threads = r["threads"]
        pushes = f"{r['posts']} ({r['post_cpu'] * 1e6:.0f})" if r["posts"] else ""
        by_thread: dict[str, list[int]] = {}
        for (role, generation), count in r["gc"].items():
            by_thread.setdefault(role, [0, 0, 0])[generation] = count
        collections = ", ".join(f"{role} {'/'.join(map(str, c))}" for role, c in sorted(by_thread.items()))
        print(
            f"  {config:<36} {'on' if gc_on else 'off':<4} {(r['loop'] - base['loop']) * 1e6:6.2f}"
            f" {threads.get('state', 0) * 1e6:6.2f} {threads.get('collector', 0) * 1e6:9.2f}"
            f" {threads.get('sender', 0) * 1e6:6.2f} {(r['total'] - base['total']) * 1e6:7.2f} {r['dropped']:7.0f}"
            f"  {pushes:<17} {collections}"
        )
    print(f"  (bare taskiq: loop {statistics.median(r['loop'] for r in results[(bm.BARE, True)]) * 1e6:.2f} µs a task)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
