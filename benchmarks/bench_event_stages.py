"""What the sinks' threads do per task event, stage by stage, for a backlog of queued handles.

``bench_middleware.py`` gives each thread's total; this script splits it. The real middleware records ``--tasks``
noop attempts (``pre_execute``/``post_execute``) into a holding deferred sink, as the state store and Loki sinks get
them, and then each stage runs over all of them in turn, in this one thread, as the sinks' threads would:

resolve (the event built from its handle), settle (redaction; the parameters' checked JSON text kept), record JSON
(the line every sink shares), state op (``StateSink._prepare``), in-process store write (batches of 500), Loki entry,
Loki push body + gzip (batches of 1,000).

The backlog is what a sink's queue holds when its thread falls behind a saturated loop (``--tasks 10000``, the
state store's default buffer); ``--tasks 500`` is one flusher batch. Best of ``--rounds``, µs per task, GC off (its
cost is measured by bench_middleware's totals, not here).

Usage::

    PYTHONPATH=exporter python benchmarks/bench_event_stages.py [--tasks 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import tempfile
import time
from typing import Any

os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-stages-"))

from taskiq import TaskiqMessage, TaskiqResult

from taskiq_monitor.events import EventSink, TaskEvent, record_json, resolve
from taskiq_monitor.middleware import MonitoringMiddleware
from taskiq_monitor.settings import Settings
from taskiq_monitor.sinks.loki.format import EntryEncoder, encode_push, gzip_body
from taskiq_monitor.sinks.state import StateSink, _history_kept
from taskiq_monitor.store import WriteBatch, memory_store

STATE_BATCH = 500  # the flusher's default batch (state_batch_events)
LOKI_BATCH = 1000  # the collector's default push (loki_batch_max_records)


class _Holding(EventSink):
    """A deferred sink that keeps what it is handed, as a queue behind its thread would."""

    deferred = True

    def __init__(self) -> None:
        self.held: list[Any] = []

    def emit(self, event: Any) -> None:
        self.held.append(event)


def _handles(n: int) -> list[Any]:
    sink = _Holding()
    middleware = MonitoringMiddleware(Settings(), sinks=[sink])
    result: TaskiqResult[int] = TaskiqResult(is_err=False, return_value=1, execution_time=0.001)
    for i in range(n):
        message = TaskiqMessage(
            task_id=f"t{i}",
            task_name="noop",
            labels={"taskiq_monitor_enqueued_at": time.time()},
            args=[i],
            kwargs={"options": {"lang": "en", "retries": 2}},
        )
        middleware.pre_execute(message)
        middleware.post_execute(message, result)
    return sink.held


def _round(n: int) -> dict[str, float]:
    handles = _handles(n)
    # Built before the clock starts: a sink's thread has them already.
    sink = StateSink(Settings())
    store = memory_store(Settings())
    encoder = EntryEncoder("bench", None)
    times: dict[str, float] = {}
    start = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal start
        now = time.perf_counter()
        times[name] = (now - start) / n * 1e6
        start = now

    events: list[TaskEvent] = [e for e in (resolve(h) for h in handles) if e is not None]
    lap("resolve (build the event)")
    for event in events:
        event.redacted_fields(for_json=True)
    lap("settle (redaction)")
    for event in events:
        record_json(event)
    lap("record JSON")
    ops = []
    for i in range(0, len(events), STATE_BATCH):
        chunk = events[i : i + STATE_BATCH]
        kept = _history_kept(chunk)
        ops.append([sink._prepare(e, history=j in kept) for j, e in enumerate(chunk)])
    lap("state op")
    for chunk_ops in ops:
        store.write(WriteBatch(now=time.time(), ops=chunk_ops))
    lap("in-process store write")
    entries = [encoder.entry(e)[0] for e in events]
    lap("Loki entry")
    for i in range(0, len(entries), LOKI_BATCH):
        gzip_body(encode_push(entries[i : i + LOKI_BATCH]))
    lap("Loki push body + gzip")
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.tasks < 1 or args.rounds < 1:
        parser.error("--tasks and --rounds must be at least 1")
    logging.disable(logging.CRITICAL)
    gc.disable()
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for name, value in _round(args.tasks).items():
            best[name] = min(best.get(name, value), value)
    load = os.getloadavg()
    print(f"python {sys.version.split()[0]}, {args.tasks} noop tasks held, best of {args.rounds}, load {load[0]:.2f}")
    for name, value in best.items():
        print(f"  {name:28} {value:6.2f} µs/task")
    print(f"  {'all stages':28} {sum(best.values()):6.2f} µs/task")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
