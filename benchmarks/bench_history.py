"""Execution history benchmark: a real redis-server filled with N executions over 30 days, then every query shape.

Run (needs redis-server on PATH)::

    PYTHONPATH=exporter python benchmarks/bench_history.py [--executions 1000000] [--days 30] [--writers 2]

What it does:

1. starts a throw-away redis-server on a free port;
2. fills it from ``--writers`` processes through the project's own write path: each execution is three events
   (pending, running, finished) built like the middleware builds them (15 task types, ~2 % failed with a traceback,
   ~0.5 % retried, parameters of a few hundred bytes), encoded by ``StateSink._prepare`` and applied by
   ``RedisWriter`` in batches of ``state_batch_events`` (the flusher thread's round trip, without its pacing);
   reports the ingest rate in executions/s;
3. memory per execution: ``MEMORY USAGE`` of the history's keys (record hash + indexes) / executions, and the
   ``used_memory`` delta of the whole fill (which also holds the capped live stream and the per-minute counters);
4. every query shape of issue 10 through the HTTP API (in-process ASGI): first page (3 rounds x 10 requests) and
   paging 10 pages deep, each page checked against the ground truth (complete, in order); p50/p99;
5. the same first pages while retention deletes one day of executions in the background (bounded steps);
6. the query shapes again with the pure-Python RESP parser when hiredis is installed (same run: a ratio).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "exporter"))

from taskiq_monitor.events import TaskEvent  # noqa: E402
from taskiq_monitor.settings import Settings  # noqa: E402

DAY = 86400.0
TYPES = [
    f"app.tasks:{n}"
    for n in (
        "send_email",
        "score_message_task",
        "resize_image",
        "sync_crm",
        "charge_card",
        "render_pdf",
        "index_document",
        "notify_push",
        "import_csv",
        "export_report",
        "refresh_token",
        "geocode_address",
        "transcode_video",
        "cleanup_tmp",
        "audit_log",
    )
]
WORDS = [
    "lorem",
    "ipsum",
    "dolor",
    "sit",
    "amet",
    "consectetur",
    "adipiscing",
    "elit",
    "sed",
    "do",
    "eiusmod",
    "tempor",
    "incididunt",
    "ut",
    "labore",
]
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/usr/lib/python3/site-packages/taskiq/receiver/receiver.py", line 270, in run_task\n'
    "    returned = await target_future\n"
    '  File "/app/app/tasks.py", line {line}, in {name}\n'
    "    result = await client.post(url, json=payload)\n"
    '  File "/app/app/clients.py", line 88, in post\n'
    "    raise UpstreamError(f'upstream returned {{status}}')\n"
    "app.clients.UpstreamError: upstream returned 503\n"
)


def task_kind(i: int) -> tuple[str, str]:
    """Type and final status of execution i (deterministic: the ground truth is recomputed, not stored)."""
    rnd = random.Random(i)
    name = TYPES[i % 15]
    x = rnd.random()
    if name == TYPES[14]:  # a type that almost never fails: the rare pair of the table
        status = "failed" if x < 0.0002 else "success"
    else:
        status = "failed" if x < 0.02 else ("retried" if x < 0.025 else "success")
    return name, status


def first_time(i: int, n: int, start: float, days: float) -> float:
    return start + (i / n) * days * DAY


def events_of(i: int, n: int, start: float, days: float) -> list[TaskEvent]:
    rnd = random.Random(i)
    name, status = task_kind(i)
    at = first_time(i, n, start, days)
    task_id = f"{rnd.getrandbits(128):032x}"
    wait = rnd.uniform(0.001, 0.5)
    duration = rnd.lognormvariate(-2, 1)
    args = [rnd.randint(1, 10**9)]
    kwargs = {
        "user_id": rnd.randint(1, 10**7),
        "email": f"user{rnd.randint(1, 10**6)}@example.com",
        "message": " ".join(rnd.choice(WORDS) for _ in range(rnd.randint(15, 40))),
        "priority": rnd.choice(("low", "normal", "high")),
    }
    labels = {"_retries": "0"} if status == "retried" else {}
    common = {"task_id": task_id, "task_name": name, "args": args, "kwargs": kwargs, "labels": labels}
    host = f"worker-{i % 4}"
    trace = f"{rnd.getrandbits(128):032x}"
    pending = TaskEvent("pending", timestamp=at, enqueued_at=at, host="api-1", pid=100, **common)  # type: ignore[arg-type]
    running = TaskEvent(
        "running",
        timestamp=at + wait,
        enqueued_at=at,
        started_at=at + wait,
        queue_wait_seconds=wait,
        host=host,
        pid=1000 + i % 8,
        trace_id=trace,
        **common,  # type: ignore[arg-type]
    )
    done = TaskEvent(
        status,
        timestamp=at + wait + duration,
        enqueued_at=at,
        started_at=at + wait,
        finished_at=at + wait + duration,
        duration_seconds=duration,
        queue_wait_seconds=wait,
        host=host,
        pid=1000 + i % 8,
        trace_id=trace,
        span_id=f"{rnd.getrandbits(64):016x}",
        **common,  # type: ignore[arg-type]
    )
    if status != "success":
        done.error_type = "UpstreamError"
        done.error_message = "upstream returned 503"
        done.traceback = TRACEBACK.format(line=rnd.randint(10, 400), name=name.split(":")[1])
    return [pending, running, done]


def writer_process(url: str, ids: range, n: int, start: float, days: float, out: Any) -> None:
    from prometheus_client import CollectorRegistry

    from taskiq_monitor.sinks.state import StateSink
    from taskiq_monitor.store import RedisWriter, WriteBatch

    settings = Settings(redis_url=url)
    writer = RedisWriter(settings)
    sink = StateSink(settings, writer=writer, registry=CollectorRegistry())
    batch: list[Any] = []
    limit = settings.state_batch_events
    for i in ids:
        for event in events_of(i, n, start, days):
            batch.append(sink._prepare(event))
        if len(batch) >= limit:
            writer.write(WriteBatch(now=time.time(), ops=batch))
            batch = []
    if batch:
        writer.write(WriteBatch(now=time.time(), ops=batch))
    out.put(len(ids))


def prepare_cost(n: int = 3000, rounds: int = 5) -> str:
    """The flusher thread's encoding per execution (three events), with and without the history records, interleaved
    rounds on the same events. ``emit`` (the task's hot path) is the same either way: it only appends to a deque."""
    from prometheus_client import CollectorRegistry

    from taskiq_monitor.sinks.state import StateSink

    events = [e for i in range(n) for e in events_of(i, n, time.time() - 30 * DAY, 30)]
    sinks = {
        flag: StateSink(Settings(history_enabled=flag), writer=object(), registry=CollectorRegistry())  # type: ignore[arg-type]
        for flag in (False, True)
    }
    best: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for flag, sink in sinks.items():
            t0 = time.perf_counter()
            for event in events:
                sink._prepare(event)
            best[flag].append((time.perf_counter() - t0) / n * 1e6)
    without, with_ = statistics.median(best[False]), statistics.median(best[True])
    return (
        f"flusher encoding per execution (3 events, median of {rounds} interleaved rounds): {without:.0f} µs without "
        f"history records, {with_:.0f} µs with ({with_ / without:.2f}x); emit() unchanged"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


class Truth:
    """Score, member, type and status of every execution, to check pages against."""

    def __init__(self, n: int, start: float, days: float) -> None:
        from taskiq_monitor.store.history import encode_member

        self.rows: list[tuple[int, bytes, str, str]] = []
        for i in range(n):
            rnd = random.Random(i)
            name, status = task_kind(i)
            task_id = f"{rnd.getrandbits(128):032x}"
            self.rows.append((int(first_time(i, n, start, days) * 1000), encode_member(task_id, 1), name, status))
        self.rows.sort(reverse=True)

    def top(self, names: set[str] | None, statuses: set[str] | None, since: int | None, k: int) -> list[str]:
        from taskiq_monitor.store.history import decode_member

        out = []
        for score, member, name, status in self.rows:
            if since is not None and score < since:
                break
            if (names is None or name in names) and (statuses is None or status in statuses):
                out.append(decode_member(member)[0])
                if len(out) == k:
                    break
        return out


async def query_shapes(url: str, truth: Truth, now: float, rounds: int, check: bool, parser: Any = None) -> list[str]:
    import httpx

    from taskiq_monitor.service.app import create_app
    from taskiq_monitor.store import redis_store

    week = (now - 7 * DAY) * 1000
    shapes: list[tuple[str, dict[str, Any], set[str] | None, set[str] | None, int | None]] = [
        ("no filter", {}, None, None, None),
        ("status=failed", {"status": "failed"}, None, {"failed"}, None),
        ("one task type", {"task_name": TYPES[1]}, {TYPES[1]}, None, None),
        (
            "type + failed + 7 days",
            {"task_name": TYPES[1], "status": "failed", "since": now - 7 * DAY},
            {TYPES[1]},
            {"failed"},
            int(week),
        ),
        (
            "rare pair + 7 days",
            {"task_name": TYPES[14], "status": "failed", "since": now - 7 * DAY},
            {TYPES[14]},
            {"failed"},
            int(week),
        ),
        ("rare pair, 30 days", {"task_name": TYPES[14], "status": "failed"}, {TYPES[14]}, {"failed"}, None),
    ]
    original = redis_store.redis_kwargs
    if parser is not None:
        redis_store.redis_kwargs = lambda s: {**original(s), "parser_class": parser}  # type: ignore[assignment]
    app = create_app(Settings(redis_url=url, history_enabled=False))
    redis_store.redis_kwargs = original
    lines = []
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://x") as http:
        for label, params, names, statuses, since in shapes:
            first: list[float] = []
            for _ in range(rounds):
                for _ in range(10):
                    t0 = time.perf_counter()
                    reply = await http.get("/api/v1/executions", params=params)
                    first.append(time.perf_counter() - t0)
                    assert reply.status_code == 200, reply.text
            deep: list[float] = []
            got: list[str] = []
            cursor = None
            complete = "not checked"
            for _ in range(10):
                t0 = time.perf_counter()
                body = (
                    await http.get("/api/v1/executions", params={**params, **({"cursor": cursor} if cursor else {})})
                ).json()
                deep.append(time.perf_counter() - t0)
                got += [r["task_id"] for r in body["executions"]]
                cursor = body["next_cursor"]
                if cursor is None:
                    break
            if check:
                want = truth.top(names, statuses, since, 500)
                complete = (
                    f"yes ({len(got)} of {len(want)})"
                    if got == want
                    else f"NO: {len(got)} returned, {len(want)} expected"
                )
            lines.append(
                f"| {label} | {pct(first, 0.5):.1f} / {pct(first, 0.99):.1f} ms | {pct(deep, 0.5):.1f} / "
                f"{pct(deep, 0.99):.1f} ms ({len(deep)} pages) | {complete} |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--executions", type=int, default=1_000_000)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prepare-only", action="store_true", help="only the flusher's encoding cost")
    args = parser.parse_args()
    print(prepare_cost())
    if args.prepare_only:
        return
    n, days = args.executions, args.days
    workdir = Path(tempfile.mkdtemp(prefix="bench-history-"))
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = subprocess.Popen(
        [
            shutil.which("redis-server") or "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
            "--loglevel",
            "warning",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        import redis

        client = redis.Redis.from_url(url)
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        print(f"redis-server {client.info('server')['redis_version']}, {os.cpu_count()} CPUs (shared machine)")
        before = int(client.info("memory")["used_memory"])
        now = time.time()
        start = now - days * DAY
        # -- ingest --
        queue: Any = multiprocessing.Queue()
        chunk = -(-n // args.writers)
        procs = [
            multiprocessing.Process(
                target=writer_process, args=(url, range(w * chunk, min(n, (w + 1) * chunk)), n, start, days, queue)
            )
            for w in range(args.writers)
        ]
        cpu = client.info("cpu")
        redis_cpu = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
        t0 = time.perf_counter()
        for p in procs:
            p.start()
        written = sum(queue.get() for _ in procs)
        for p in procs:
            p.join()
        elapsed = time.perf_counter() - t0
        print(
            f"ingest: {written} executions ({3 * written} events) from {args.writers} processes in {elapsed:.1f} s "
            f"= {written / elapsed:,.0f} executions/s"
        )
        cpu = client.info("cpu")
        redis_cpu = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]) - redis_cpu
        print(
            f"redis-server CPU during ingest: {redis_cpu:.1f} s = {redis_cpu / written * 1e6:.0f} µs/execution "
            f"(one free core would take {written / redis_cpu:,.0f} executions/s)"
        )
        # -- memory --
        prefix = "{taskiq_monitor}"
        history_keys = [f"{prefix}:h:rec", *(k.decode() for k in client.scan_iter(f"{prefix}:h:*:*", count=1000))]
        hist_bytes = sum(int(client.memory_usage(k, samples=0) or 0) for k in history_keys)
        rec_bytes = int(client.memory_usage(f"{prefix}:h:rec", samples=0) or 0)
        held = int(client.hlen(f"{prefix}:h:rec"))
        total = int(client.info("memory")["used_memory"]) - before
        stream = int(client.memory_usage(f"{prefix}:events", samples=0) or 0)
        print(
            f"memory: history {hist_bytes / held:.0f} bytes/execution ({hist_bytes / 2**20:.0f} MiB for {held}: "
            f"record hash {rec_bytes / held:.0f} + {len(history_keys) - 1} indexes "
            f"{(hist_bytes - rec_bytes) / held:.0f}); used_memory delta {total / 2**20:.0f} MiB in all "
            f"(live stream {stream / 2**20:.0f} MiB, the rest per-minute/hour counters of {days:.0f} simulated days)"
        )
        truth = Truth(n, start, days)
        print("\n| query | first page p50 / p99 | 10 pages deep, per page p50 / p99 | complete? |\n|---|---|---|---|")
        for line in asyncio.run(query_shapes(url, truth, now, args.rounds, True)):
            print(line)
        # -- queries while a day expires --
        settings = Settings(redis_url=url, history_retention_days=days - 1)
        from taskiq_monitor.store import RedisStore

        store = RedisStore(settings)
        done = threading.Event()
        steps = [0, 0]

        def expire() -> None:
            t = time.perf_counter()
            while True:
                aged, _counted, more = store.history.expire_step_sync()
                steps[0] += 1
                steps[1] += aged
                if not more:
                    break
                time.sleep(0.05)  # the service's pause between steps
            steps.append(time.perf_counter() - t)  # type: ignore[arg-type]
            done.set()

        thread = threading.Thread(target=expire)
        thread.start()
        lines = asyncio.run(query_shapes(url, truth, now, args.rounds, False))
        thread.join()
        print(f"\nduring expiry of one day ({steps[1]} executions in {steps[0]} bounded steps, {steps[2]:.1f} s):")
        for line in lines:
            print(line)
        try:
            from redis._parsers import _AsyncRESP2Parser
            from redis.utils import HIREDIS_AVAILABLE
        except ImportError:  # pragma: no cover
            HIREDIS_AVAILABLE = False
        if HIREDIS_AVAILABLE:
            print("\nwithout hiredis (pure-Python RESP parser), same data (completeness not re-checked):")
            for line in asyncio.run(query_shapes(url, truth, now, args.rounds, False, parser=_AsyncRESP2Parser)):
                print(line)
        else:
            print("\nhiredis is not installed: only the pure-Python RESP parser was measured")
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
