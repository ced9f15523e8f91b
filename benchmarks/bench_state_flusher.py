"""The state flusher's Redis round trips with and without hiredis, side by side on one redis-server.

``StateSink``'s flusher thread applies each batch of events with one EVALSHA (``RedisWriter.write``): redis-py packs
the command — the batch's arguments, about 600 bytes of record per event — and parses the small reply. With
``hiredis`` installed (a dependency: ``redis[hiredis]``) redis-py packs commands and parses replies in C; without it,
in Python. This script runs both in one process against one throw-away redis-server (needs ``redis-server`` on
PATH), in interleaved rounds, median reported:

* flusher: ``--batches`` batches of 500 prepared events written with ``RedisWriter.write``;
* stream read: XRANGE of 500 entries of the event stream (the exporter's live-feed catch-up chunk).

Usage::

    PYTHONPATH=exporter python benchmarks/bench_state_flusher.py [--batches 40] [--rounds 5]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import redis
from redis.connection import Encoder, PythonRespSerializer
from redis.utils import HIREDIS_AVAILABLE

from taskiq_monitor.events import TaskEvent
from taskiq_monitor.redaction import Redactor
from taskiq_monitor.settings import Settings
from taskiq_monitor.sinks.state import StateSink
from taskiq_monitor.store import RedisStore, RedisWriter, WriteBatch

BATCH = 500


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def python_parser_writer(settings: Settings) -> RedisWriter:
    """A RedisWriter whose connections pack and parse in pure Python, as without hiredis."""
    from redis._parsers import _RESP2Parser

    writer = RedisWriter(settings)
    packer = PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)
    assert settings.redis_url
    writer.client = redis.Redis.from_url(
        settings.redis_url, parser_class=_RESP2Parser, command_packer=packer, socket_timeout=5.0
    )
    writer.script = writer.client.register_script(writer.script.script)
    return writer


def batches(settings: Settings, n: int) -> list[WriteBatch]:
    sink = StateSink(settings, writer=RedisWriter(settings))
    redactor = Redactor()
    out = []
    seq = 0
    for _ in range(n):
        batch = WriteBatch(now=time.time())
        for i in range(BATCH):
            seq += 1
            status = ("pending", "running", "success")[i % 3]
            event = TaskEvent(
                status, f"{seq // 3:032x}", "score_message_task", time.time(), 1, "worker-1", 1234, time.time()
            )
            event.args, event.kwargs = [seq], {"chat": {"id": 42, "lang": "en"}, "text": "hello " * 20}
            event.defer_redaction(redactor)
            batch.ops.append(sink._prepare(event))
        out.append(batch)
    return out


def run_writes(writer: RedisWriter, prepared: list[WriteBatch]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for batch in prepared:
        batch.now = time.time()
        batch.batch_id = f"{batch.batch_id}-{time.perf_counter_ns()}"  # a new batch each time (not deduplicated)
        writer.write(batch)
    events = len(prepared) * BATCH
    return (time.perf_counter() - wall) / events, (time.process_time() - cpu) / events


def run_reads(client: Any, stream: str, n: int = 20) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(n):
        client.xrange(stream, count=BATCH)
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not HIREDIS_AVAILABLE:
        print("hiredis is not installed: pip install 'redis[hiredis]'", file=sys.stderr)
        return 2
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        print("redis-server not found", file=sys.stderr)
        return 2
    port, tmp = free_port(), tempfile.mkdtemp(prefix="bench-flusher-")
    server = subprocess.Popen(
        [redis_bin, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL,
    )
    try:
        settings = Settings(redis_url=f"redis://127.0.0.1:{port}/0")
        for _ in range(100):
            try:
                redis.Redis(port=port).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        prepared = batches(settings, args.batches)
        writers = {"hiredis (C)": RedisWriter(settings), "pure Python": python_parser_writer(settings)}
        stream = RedisStore(settings).stream
        writes: dict[str, list[tuple[float, float]]] = {name: [] for name in writers}
        reads: dict[str, list[tuple[float, float]]] = {name: [] for name in writers}
        for writer in writers.values():  # warm-up: scripts loaded, stream filled
            run_writes(writer, prepared[:2])
        for _ in range(args.rounds):
            for name, writer in writers.items():
                writes[name].append(run_writes(writer, prepared))
                reads[name].append(run_reads(writer.client, stream))
        print(f"python {sys.version.split()[0]}, redis-py {redis.__version__}, {args.batches} x {BATCH}-event batches,")
        print(f"median of {args.rounds} interleaved rounds")
        print(f"  {'parser':14} {'flusher µs/event':>17} {'CPU µs/event':>13} {'XRANGE 500 ms':>14} {'CPU ms':>7}")
        for name in writers:
            w = [statistics.median(x[i] for x in writes[name]) for i in range(2)]
            r = [statistics.median(x[i] for x in reads[name]) for i in range(2)]
            print(f"  {name:14} {w[0] * 1e6:17.2f} {w[1] * 1e6:13.2f} {r[0] * 1e3:14.2f} {r[1] * 1e3:7.2f}")
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
