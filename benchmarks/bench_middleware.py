"""Per-task overhead of monitoring, side by side in one process: bare taskiq, taskiq's PrometheusMiddleware,
and taskiq-monitor's MonitoringMiddleware — with the multiprocess metrics directory active, as in production —
metrics only, then with task events on: 4. events into the state store (the in-process store: the live feed and
history of an in-memory app), 5. events into the state store and shipped to a Loki double (a receiver in a
separate process, so it does not share this process's CPU), 6. the same with plain JSON pushes
(``loki_compression="none"``), 7. the same with every state change its own record (``events_coalesce=False``; by
default a sink records an attempt that finished before its thread took the running event as its final event only),
8. with the state in a real redis-server (a
throw-away one on a free port, when ``redis-server`` is on the PATH; its own CPU is not counted: the figure is
what the worker process pays — encoding the script's arguments, the round trip's system calls), and 9.-10. a
floor, which is not the product: the least that a record of every execution costs in this interpreter
(``_FloorMiddleware``), its records encoded in a thread and on the loop.

Four paths are measured:

* worker side: ``Receiver.callback(message_bytes)`` — what a worker process does per message (2 events a task:
  running, success);
* worker side with a socket round trip per task (five of the configurations): the same, with the task sending and
  receiving one byte on a socket pair, as a broker client does per message. Each system call releases the GIL, and
  when a sink's thread is waiting for it, the release wakes that thread: the loop pays for the wake-up (docs/
  benchmarks.md, sixth pass). The first path has no system call on the loop and cannot show that cost;
* the same, paced (20 tasks, then 2 ms idle): a loop about half busy, where workers run; the sinks' threads then do
  their work while the loop idles;
* end to end: ``.kiq()`` on ``InMemoryBroker(await_inplace=True)`` — send hooks + worker hooks (3 events a task; the
  task id's ``uuid4`` is a system call).

Five figures per configuration: wall time; **loop CPU** (``time.thread_time`` of the event loop's thread: what a
task pays on the loop); **total CPU** (``time.process_time`` until the sinks' threads have drained everything they
were handed — serialisation, the store's writes, gzip and HTTP included); **dropped**: events the sinks dropped
in the worst round, and the hooks' and hand-overs' own failures (``taskiq_monitor_errors_total``); their buffers are
sized here so that none should drop: a run that drops does less than all the work;
and **GC 0/1/2**: the cyclic garbage collector's collections of each generation in a round (the median). Objects that
die with their task make none; queued handles and kept records do, and a generation-2 collection scans the whole heap.
Configurations run interleaved in rounds
(A B C D E A B …) and the median round is reported, so that a noisy neighbour slows all of them alike; **per round**
is the ratio to ``PrometheusMiddleware`` taken within each round (median, and its range across rounds). Usage::

    python benchmarks/bench_middleware.py [--tasks 20000] [--rounds 7] [--no-redis]
"""

from __future__ import annotations

import os
import tempfile

# Must precede every prometheus_client import (the value class is chosen at import time).
_METRICS_DIR = tempfile.mkdtemp(prefix="bench-taskiq-monitor-")
os.environ["PROMETHEUS_MULTIPROC_DIR"] = _METRICS_DIR

import argparse  # noqa: E402
import asyncio  # noqa: E402
import collections  # noqa: E402
import gc  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any, Literal  # noqa: E402

import orjson  # noqa: E402
from prometheus_client import values  # noqa: E402
from taskiq import AsyncBroker, InMemoryBroker, TaskiqMessage, TaskiqMiddleware  # noqa: E402
from taskiq.middlewares.prometheus_middleware import PrometheusMiddleware  # noqa: E402
from taskiq.receiver import Receiver  # noqa: E402

from taskiq_monitor.events import rfc3339  # noqa: E402
from taskiq_monitor.metrics import LOG_DROPPED  # noqa: E402
from taskiq_monitor.middleware import MonitoringMiddleware  # noqa: E402
from taskiq_monitor.settings import Settings  # noqa: E402
from taskiq_monitor.sinks.loki import LokiSink  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_loki import Receiver as LokiDouble  # noqa: E402
from redis_server import start_redis  # noqa: E402

BARE = "bare taskiq"
PROMETHEUS = "taskiq PrometheusMiddleware"
METRICS_ONLY = "MonitoringMiddleware, metrics only"
EVENTS_STATE = "+ events: state store"
EVENTS_STATE_LOKI = "+ events: state store + Loki"
EVENTS_STATE_LOKI_PLAIN = "+ events: state + Loki, no gzip"
EVENTS_STATE_LOKI_ALL = "+ events: state + Loki, no coalescing"
# LOKI_STATUSES=failed,retried: the benchmark's tasks all succeed, so Loki ships nothing (each event costs a compare).
EVENTS_STATE_LOKI_FAILURES = "+ events: state + Loki, failures only"
EVENTS_REDIS = "+ events: Redis state"
EVENTS_REDIS_LOKI = "+ events: Redis state + Loki"
# Not the product: the least a record of every execution can cost in this interpreter (see _FloorMiddleware).
FLOOR = "floor: a record a task, no redaction"
FLOOR_INLINE = "floor, encoded on the loop"

_LOKI: LokiDouble | None = None
_HISTORY = True  # --history-off: the state store without the execution history (as before it existed)
_SPOOL = tempfile.mkdtemp(prefix="bench-taskiq-monitor-spool-")
_REDIS_URL: str | None = None  # set by main() when it started a redis-server


def _events(
    loki: bool,
    redis_url: str | None = None,
    compression: Literal["gzip", "none"] = "gzip",
    coalesce: bool = True,
    statuses: str | None = None,
) -> list[Any]:
    from taskiq_monitor.sinks.state import StateSink

    global _LOKI
    # Buffers that cannot overflow: every configuration does all of its work (a full buffer drops events, counted, and
    # a run that dropped would look cheaper than it is; the "dropped" column shows that none did).
    settings = Settings(
        history_enabled=_HISTORY, redis_url=redis_url, events_coalesce=coalesce, state_buffer_events=_NO_DROP
    )
    sinks: list[Any] = [StateSink(settings)]
    if loki:
        if _LOKI is None:
            _LOKI = LokiDouble()
        settings = Settings(
            redis_url=redis_url,
            loki_url=_LOKI.url,
            loki_compression=compression,
            loki_spool_dir=_SPOOL,
            loki_queue_max_records=_NO_DROP,
            state_buffer_events=_NO_DROP,
            loki_batch_wait_seconds=0.2,
            history_enabled=_HISTORY,
            events_coalesce=coalesce,
            **({"loki_statuses": statuses} if statuses else {}),
        )
        sinks.append(LokiSink(settings))
    return [MonitoringMiddleware(settings, sinks=sinks)]


_HOST, _PID = socket.gethostname(), os.getpid()


class _FloorMiddleware(TaskiqMiddleware):
    """A reference, not the product: the least that recording every execution can cost in CPython.

    One tuple a task is queued; a batch of them is encoded: a dict of the record's fields each, orjson, kept in a
    bounded deque (the store), and its line added to a Loki push body, gzipped (level 1) once per 1,000 lines. No
    metrics, no redaction, no running set, no history index, no HTTP: what is left of the events' work when everything
    the product adds to it is taken away. ``inline=False`` encodes in a thread, as the product's sinks do;
    ``inline=True`` on the loop, a batch every ``WAKE_AT`` tasks (what it costs without a second thread). Side by
    side with ``PrometheusMiddleware``, it shows how much of the 2× budget (issue 11 part 3) the interpreter itself
    takes (docs/benchmarks.md, eighteenth pass).
    """

    # The Loki collector's own wake-up: a handle is not left to age into an older GC generation.
    WAKE_AT = LokiSink.PROMPT_RECORDS

    def __init__(self, inline: bool) -> None:
        super().__init__()
        self._inline = inline
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._store: collections.deque[tuple[str, bytes]] = collections.deque(maxlen=10_000)
        self._lines: list[tuple[str, str]] = []
        self._starts: dict[int, tuple[float, float]] = {}
        self._wake = threading.Event()
        self._busy = False
        if not inline:
            threading.Thread(target=self._run, name="floor", daemon=True).start()

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        self._starts[id(message)] = (time.perf_counter(), time.time())
        return message

    def post_execute(self, message: TaskiqMessage, result: Any) -> None:
        started_perf, started_at = self._starts.pop(id(message))
        self._queue.append(
            (
                message.task_id,
                message.task_name,
                started_at,
                time.perf_counter() - started_perf,
                message.args,
                message.kwargs,
                message.labels,
                result.is_err,
            )
        )
        if len(self._queue) >= self.WAKE_AT:
            if self._inline:
                self._encode()
            else:
                self._wake.set()

    def _run(self) -> None:
        while True:
            # Every 10 ms while records flow, as the state store's flusher; idle, it sleeps (no wake-ups charged to
            # the other configurations' rounds) until WAKE_AT records or drain() wake it.
            self._wake.wait(0.01 if self._queue else 1.0)
            self._wake.clear()
            self._busy = True
            self._encode()
            self._busy = False

    def _encode(self) -> None:
        lines = self._lines
        while self._queue:
            task_id, task_name, started_at, duration, args, kwargs, labels, is_err = self._queue.popleft()
            finished_at = started_at + duration
            # The record's fields as the product's (docs/loki.md, "Record schema"), so that its encoding costs the
            # same; what the floor does not know (queue wait, errors, trace ids) is null.
            line = orjson.dumps(
                {
                    "schema_version": 1,
                    "status": "failed" if is_err else "success",
                    "task_id": task_id,
                    "task_name": task_name,
                    "timestamp": rfc3339(finished_at),
                    "attempt": 1,
                    "enqueued_at": None,
                    "started_at": started_at,
                    "finished_at": finished_at,
                    "duration_seconds": duration,
                    "queue_wait_seconds": None,
                    "args": args,
                    "kwargs": kwargs,
                    "labels": labels,
                    "error_type": None,
                    "error_message": None,
                    "traceback": None,
                    "trace_id": None,
                    "span_id": None,
                    "worker": {"host": _HOST, "pid": _PID},
                }
            )
            self._store.append((task_id, line))
            lines.append((str(int(started_at * 1e9)), line.decode()))
            if len(lines) >= 1000:
                body = orjson.dumps({"streams": [{"stream": {"task_name": task_name}, "values": lines}]})
                zlib.compress(body, 1)
                lines.clear()

    def drain(self) -> None:
        """Until every record handed over is encoded."""
        if self._inline:
            self._encode()
            return
        while self._queue or self._busy:
            self._wake.set()
            time.sleep(0.002)


CONFIGS: dict[str, Callable[[], list[Any]]] = {
    BARE: lambda: [],
    PROMETHEUS: lambda: [PrometheusMiddleware(server_port=0)],
    METRICS_ONLY: lambda: [MonitoringMiddleware(Settings(), sinks=[])],
    EVENTS_STATE: lambda: _events(loki=False),
    EVENTS_STATE_LOKI: lambda: _events(loki=True),
    EVENTS_STATE_LOKI_PLAIN: lambda: _events(loki=True, compression="none"),
    EVENTS_STATE_LOKI_ALL: lambda: _events(loki=True, coalesce=False),
    EVENTS_STATE_LOKI_FAILURES: lambda: _events(loki=True, statuses="failed,retried"),
    EVENTS_REDIS: lambda: _events(loki=False, redis_url=_REDIS_URL),
    EVENTS_REDIS_LOKI: lambda: _events(loki=True, redis_url=_REDIS_URL),
    FLOOR: lambda: [_FloorMiddleware(inline=False)],
    FLOOR_INLINE: lambda: [_FloorMiddleware(inline=True)],
}


_INSTANCES: dict[str, list[Any]] = {}
_IO = socket.socketpair()
_NO_DROP = 10_000_000
_DROPPED: dict[str, float] = {}  # configuration -> events its sinks dropped so far (they count across rounds)


def build(config: str, await_inplace: bool) -> tuple[AsyncBroker, Any]:
    # One middleware instance per configuration: taskiq's PrometheusMiddleware registers its metrics on the
    # global registry in __init__ and cannot be constructed twice.
    if config not in _INSTANCES:
        _INSTANCES[config] = CONFIGS[config]()
    broker = InMemoryBroker(await_inplace=await_inplace).with_middlewares(*_INSTANCES[config])

    @broker.task(task_name="noop")
    async def noop(x: int, options: dict[str, Any] | None = None) -> int:
        return x

    @broker.task(task_name="noop_io")
    async def noop_io(x: int, options: dict[str, Any] | None = None) -> int:
        # One socket round trip, as a worker's broker client makes per message: two system calls that release the
        # GIL. Whether a sink's thread then waits for the GIL decides what each release costs the loop.
        _IO[0].send(b"x")
        _IO[1].recv(1)
        return x

    return broker, noop


def _loki_idle(sink: Any) -> bool:
    return sink.pending() == 0 and sink._sending is None


def _drain(config: str) -> float:
    """Wait until every sink's threads have handled what they were handed (their CPU belongs to the tasks); return
    how many events the sinks dropped since the last call.

    Loki's shipper is waited for, not stopped: stopping it here would count closing its spool and HTTP client, and
    the next round's opening them, in the tasks' CPU (~10 ms each time, 0.5-1 µs a task at these round sizes), which a
    worker does once. ``_ready`` and ``_park`` start and stop it outside the measured span."""
    dropped = 0.0
    for mw in _INSTANCES.get(config, []):
        if isinstance(mw, _FloorMiddleware):
            mw.drain()
        if isinstance(mw, MonitoringMiddleware):
            # A hook or hand-over that failed (counted, the task unaffected) delivered nothing: count it as a drop.
            dropped += sum(child._value.get() for child in mw.metrics.monitor_errors._metrics.values())
        for sink in getattr(mw, "sinks", []):
            if hasattr(sink, "pending"):
                # Idle twice, 5 ms apart: a record between the queue and the batch being built counts in neither.
                while not (_loki_idle(sink) and (time.sleep(0.005) or _loki_idle(sink))):
                    time.sleep(0.005)
            else:
                sink.stop()
            dropped += getattr(sink, "dropped", 0)  # the state store's buffer
            metrics = getattr(sink, "metrics", None)  # Loki's queue and spool
            if metrics is not None:
                dropped += metrics.by_result[LOG_DROPPED]._value.get()
    before, _DROPPED[config] = _DROPPED.get(config, 0.0), dropped
    return dropped - before


def _ready(config: str) -> None:
    """Before a measured span: Loki's shipper threads started and set up (spool, HTTP client)."""
    for mw in _INSTANCES.get(config, []):
        for sink in getattr(mw, "sinks", []):
            if hasattr(sink, "pending"):
                sink._start_threads()
                sink._run.ready.wait(30)


def _park(config: str) -> None:
    """After a measured span: stop Loki's shipper threads, so that their idle wake-ups do not run during the other
    configurations' rounds (a waiting thread takes the GIL whenever the loop makes a system call)."""
    for mw in _INSTANCES.get(config, []):
        for sink in getattr(mw, "sinks", []):
            if hasattr(sink, "pending"):
                sink.flush_sync()


# wall, loop CPU, total CPU — seconds per task; events dropped; the cyclic GC's collections (generations 0, 1, 2)
Sample = tuple[float, float, float, float, tuple[int, ...]]


def _collections() -> tuple[int, ...]:
    return tuple(generation["collections"] for generation in gc.get_stats())


def _since(before: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(now - then for now, then in zip(_collections(), before, strict=True))


async def worker_side(config: str, n: int, task_name: str = "noop", pace: bool = False) -> Sample:
    broker, _ = build(config, await_inplace=True)
    broker.is_worker_process = True
    receiver = Receiver(broker, run_startup=False)
    messages = [
        broker.formatter.dumps(
            TaskiqMessage(
                task_id=f"t{i}",
                task_name=task_name,
                labels={"taskiq_monitor_enqueued_at": time.time()},
                args=[i],
                kwargs={"options": {"lang": "en", "retries": 2}},
            )
        ).message
        for i in range(n)
    ]
    for mw in broker.middlewares:
        if isinstance(mw, MonitoringMiddleware):
            await mw.startup()  # no HTTP server: taskiq's PrometheusMiddleware.startup would bind a port
    _ready(config)
    collections = _collections()
    cpu, loop_cpu, start = time.process_time(), time.thread_time(), time.perf_counter()
    for index, raw in enumerate(messages):
        await receiver.callback(raw)
        if pace and index % _PACE_TASKS == _PACE_TASKS - 1:
            await asyncio.sleep(_PACE_SECONDS)  # the loop idles: the GIL is free for the sinks' threads
    wall, loop_cpu = time.perf_counter() - start, time.thread_time() - loop_cpu
    dropped = _drain(config)
    total = time.process_time() - cpu
    gcs = _since(collections)
    _park(config)
    return wall / n, loop_cpu / n, total / n, dropped, gcs


async def worker_side_io(config: str, n: int) -> Sample:
    return await worker_side(config, n, "noop_io")


# A loop about half busy: 20 tasks, then 2 ms idle (a worker below saturation, which is where workers run).
_PACE_TASKS, _PACE_SECONDS = 20, 0.002


async def worker_side_io_paced(config: str, n: int) -> Sample:
    return await worker_side(config, n, "noop_io", pace=True)


# The configurations of the socket round trip path (the others add nothing to what it shows).
IO_CONFIGS = (BARE, PROMETHEUS, METRICS_ONLY, EVENTS_STATE, EVENTS_STATE_LOKI)


async def end_to_end(config: str, n: int) -> Sample:
    broker, noop = build(config, await_inplace=True)
    await broker.startup()
    _ready(config)
    options = {"lang": "en", "retries": 2}
    collections = _collections()
    cpu, loop_cpu, start = time.process_time(), time.thread_time(), time.perf_counter()
    for i in range(n):
        await noop.kiq(i, options=options)
    wall, loop_cpu = time.perf_counter() - start, time.thread_time() - loop_cpu
    dropped = _drain(config)
    total = time.process_time() - cpu
    gcs = _since(collections)
    await broker.shutdown()
    return wall / n, loop_cpu / n, total / n, dropped, gcs


def _paired_ratios(runs: list[Sample], bare: list[Sample], prometheus: list[Sample]) -> str:
    """The +total ÷ PrometheusMiddleware's +total of each round, from that round's own bare and reference runs:
    ``median (min–max)``. The reference's overhead moves by up to 2× between minutes on a shared machine, and the
    rounds interleave the configurations, so a ratio taken within a round shows how steady the ratio itself is,
    which the ratio of the medians (the column before) hides."""
    ratios = []
    for sample, base, reference in zip(runs, bare, prometheus, strict=True):
        denominator = reference[2] - base[2]
        if denominator > 0:
            ratios.append((sample[2] - base[2]) / denominator)
    if not ratios:
        return "n/a"
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--history-off", action="store_true", help="events configurations without the history")
    parser.add_argument("--no-redis", action="store_true", help="skip the configuration with a real redis-server")
    parser.add_argument(
        "--worker-side-only", action="store_true", help="only the worker-side path (quicker, for before/after pairs)"
    )
    args = parser.parse_args()
    global _REDIS_URL
    redis_server = None if args.no_redis else start_redis()
    if redis_server is None:
        CONFIGS.pop(EVENTS_REDIS)
        CONFIGS.pop(EVENTS_REDIS_LOKI)
    else:
        _REDIS_URL = redis_server[1]
    global _HISTORY
    _HISTORY = not args.history_off
    logging.disable(logging.CRITICAL)
    if values.ValueClass is values.MutexValue:
        raise SystemExit("multiprocess mode must be active")
    print(
        f"python {sys.version.split()[0]}, {args.tasks} tasks x {args.rounds} rounds, multiprocess dir active, "
        f"execution history {'on' if _HISTORY else 'off'}"
    )
    paths: list[tuple[str, Callable[[str, int], Any], tuple[str, ...]]] = [
        ("worker side", worker_side, tuple(CONFIGS)),
        ("worker side, a socket round trip per task", worker_side_io, IO_CONFIGS),
        ("worker side, a socket round trip per task, loop about half busy", worker_side_io_paced, IO_CONFIGS),
        ("end to end (.kiq)", end_to_end, tuple(CONFIGS)),
    ]
    if args.worker_side_only:
        paths = paths[:1]
    results: dict[str, dict[str, list[Sample]]] = {path: {} for path, _, _ in paths}
    try:
        for path, fn, configs in paths:
            for config in configs:
                asyncio.run(fn(config, 2000))  # warm-up (and the Loki double's start)
            for _ in range(args.rounds):
                for config in configs:
                    results[path].setdefault(config, []).append(asyncio.run(fn(config, args.tasks)))
    finally:
        if _LOKI is not None:
            _LOKI.stop()
        if redis_server is not None:
            redis_server[0].terminate()
            redis_server[0].wait(10)
    for path, per_config in results.items():
        print(f"\n{path} (µs per task; overhead = minus bare taskiq; median of {args.rounds} rounds):")
        med = {
            c: (
                statistics.median(s[0] for s in runs),
                statistics.median(s[1] for s in runs),
                statistics.median(s[2] for s in runs),
            )
            for c, runs in per_config.items()
        }
        drops = {c: max(s[3] for s in runs) for c, runs in per_config.items()}
        # Collections of each generation in a round (the median round's of each): tracked objects that outlive a
        # task (queued handles, kept records) make them; a generation-2 one scans the whole heap.
        gcs = {
            c: "/".join(str(int(statistics.median(s[4][g] for s in runs))) for g in range(3))
            for c, runs in per_config.items()
        }
        bare = med[BARE]
        print(
            f"  {'configuration':36} {'wall':>7} {'tasks/s':>8} {'loop CPU':>9} {'+loop':>7} {'total CPU':>10} "
            f"{'+total':>7} {'÷ Prom +total':>14} {'per round':>15} {'dropped':>8} {'GC 0/1/2':>10}"
        )
        prom_total = med[PROMETHEUS][2] - bare[2]
        for config, (wall, loop, total) in med.items():
            extra = total - bare[2]
            paired = _paired_ratios(per_config[config], per_config[BARE], per_config[PROMETHEUS])
            print(
                f"  {config:36} {wall * 1e6:7.2f} {1 / wall:8.0f} {loop * 1e6:9.2f} {(loop - bare[1]) * 1e6:7.2f} "
                f"{total * 1e6:10.2f} {extra * 1e6:7.2f} {extra / prom_total:13.2f}x {paired:>15} "
                f"{drops[config]:8.0f} {gcs[config]:>10}"
            )
        if any(drops.values()):
            print("  WARNING: events were dropped (a round's maximum above): those rounds did less than all the work")
    shutil.rmtree(_METRICS_DIR, ignore_errors=True)
    shutil.rmtree(_SPOOL, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
