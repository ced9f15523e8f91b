"""Who pays for shipping task events to Loki: the worker (``loki_shipper=worker``) or the exporter (``exporter``).

    PYTHONPATH=exporter python benchmarks/bench_relay.py [--records 20000] [--rounds 5]

The same records (9 in 10 ``success``, 1 in 10 ``failed`` with a traceback), the same Loki push-protocol receiver
in a separate process (``bench_loki.Receiver``: it gunzips and counts; its CPU is not counted), side by side in
interleaved rounds:

1. **worker's sink**: the records handed to a ``LokiSink`` as a worker's middleware does, with their JSON line
   already built (the state sink builds it, and the two share it). Reported: this process's CPU per record from
   the first ``emit`` until the receiver counted the last one: the shipping CPU a worker pays, in its own process,
   beside its tasks.
2. **exporter's relay**: the records written to a real redis-server by the state sink's own writer first (what the
   workers do anyway), then shipped by ``LokiRelay``. Reported: this process's CPU per record while the relay
   reads, pushes and acknowledges them all: what the exporter pays, in its own process, away from the tasks.

The worker's side of each choice is in ``bench_middleware.py``: "Redis state + Loki" (the worker ships) against
"Redis state" (the exporter ships).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loki import Receiver
from redis_server import start_redis
from taskiq_monitor.events import TaskEvent, record_json
from taskiq_monitor.settings import Settings

TRACEBACK = "Traceback (most recent call last):\n" + '  File "app/tasks.py", line 42, in score\n    raise\n' * 8


def make_events(n: int) -> list[TaskEvent]:
    now = time.time()
    events = []
    for i in range(n):
        failed = i % 10 == 9
        ev = TaskEvent(
            status="failed" if failed else "success",
            task_id=f"{i:032x}",
            task_name=f"app.tasks:type_{i % 15}",
            timestamp=now + i * 1e-4,
            enqueued_at=now,
            started_at=now,
            finished_at=now + i * 1e-4,
            duration_seconds=0.01,
            queue_wait_seconds=0.002,
            host="worker-1",
            pid=4242,
            args=[i],
            kwargs={"message_id": i, "text": "hello world " * 4},
        )
        if failed:
            ev.error_type, ev.error_message, ev.traceback = "ValueError", f"bad input {i}", TRACEBACK
        record_json(ev)  # built once per event by whichever sink comes first; both configurations share it
        events.append(ev)
    return events


def worker_sink(receiver: Receiver, events: list[TaskEvent], spool: Path) -> tuple[float, float]:
    from prometheus_client import CollectorRegistry

    from taskiq_monitor.sinks.loki import LokiSink

    settings = Settings(
        loki_url=receiver.url,
        loki_spool_dir=spool,
        loki_batch_wait_seconds=0.2,
        loki_queue_max_records=len(events) + 1,
    )
    sink = LokiSink(settings, registry=CollectorRegistry())
    target = receiver.count() + len(events)
    cpu, wall = time.process_time(), time.perf_counter()
    for ev in events:
        sink.emit(ev)
    while receiver.count() < target:
        time.sleep(0.005)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    sink.flush_sync(1.0)
    return cpu / len(events), len(events) / wall


def exporter_relay(receiver: Receiver, redis_url: str, events: list[TaskEvent]) -> tuple[float, float]:
    import redis
    from prometheus_client import CollectorRegistry

    from taskiq_monitor.service.loki_relay import LokiRelay
    from taskiq_monitor.sinks.state import StateSink
    from taskiq_monitor.store import RedisWriter, WriteBatch

    redis.Redis.from_url(redis_url).flushdb()
    settings = Settings(
        redis_url=redis_url,
        loki_url=receiver.url,
        loki_shipper="exporter",
        loki_batch_wait_seconds=0.2,
        stream_max_events=len(events) * 2,
    )
    relay = LokiRelay(settings)
    relay._read(1)  # creates the group before the records are written: they are the relay's to ship
    sink = StateSink(settings, writer=RedisWriter(settings), registry=CollectorRegistry())
    writer = RedisWriter(settings)
    for start in range(0, len(events), 500):
        writer.write(WriteBatch(now=time.time(), ops=[sink._prepare(e) for e in events[start : start + 500]]))
    writer.close()
    target = receiver.count() + len(events)
    cpu, wall = time.process_time(), time.perf_counter()
    relay.start()
    while receiver.count() < target:
        time.sleep(0.005)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    relay.stop()
    assert relay.dropped == 0
    return cpu / len(events), len(events) / wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    server = start_redis()
    if server is None:
        raise SystemExit("redis-server is needed (apt-get install redis-server)")
    receiver = Receiver()
    spool = Path(tempfile.mkdtemp(prefix="bench-relay-spool-"))
    results: dict[str, list[tuple[float, float]]] = {"worker's LokiSink": [], "exporter's LokiRelay": []}
    try:
        events = make_events(args.records)
        worker_sink(receiver, events[:2000], spool)  # warm-up
        exporter_relay(receiver, server[1], events[:2000])
        for _ in range(args.rounds):
            results["worker's LokiSink"].append(worker_sink(receiver, events, spool))
            results["exporter's LokiRelay"].append(exporter_relay(receiver, server[1], events))
    finally:
        receiver.stop()
        server[0].terminate()
        server[0].wait(10)
    print(f"python {sys.version.split()[0]}, {args.records} records x {args.rounds} rounds (medians)")
    print(f"  {'shipper':24} {'µs CPU/record':>14} {'records/s':>10}  paid by")
    for name, runs in results.items():
        cpu = statistics.median(r[0] for r in runs)
        rate = statistics.median(r[1] for r in runs)
        who = "the worker process" if "Sink" in name else "the exporter process"
        print(f"  {name:24} {cpu * 1e6:14.2f} {rate:10.0f}  {who}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
