"""Live feed benchmark: state change in a worker process -> WebSocket client, and the hot-path cost.

Run (needs redis-server on PATH)::

    PYTHONPATH=exporter python benchmarks/bench_live.py [--rate 1000] [--seconds 10]

What it does:

1. starts a throw-away redis-server and ``taskiq-monitor serve`` (the exporter with the live feed) on free ports;
2. starts a producer process that drives ``MonitoringMiddleware`` hooks (pre_send, post_send, pre_execute,
   post_execute: three state changes per task) at ``--rate`` events per second, through the real ``StateSink`` -> Redis;
3. a WebSocket client in this process measures, per event, receipt time minus the event's ``timestamp`` (the
   moment the hook ran; same host, same clock) and prints p50/p90/p99/max;
4. measures the hot path in this process: ``StateSink.emit`` alone, and the three middleware hooks of one task with
   and without the state sink (Redis reachable, flusher thread running).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PRODUCER = r"""
import sys, time
from prometheus_client import CollectorRegistry
from taskiq import TaskiqMessage, TaskiqResult
from taskiq_monitor.middleware import MonitoringMiddleware
from taskiq_monitor.settings import Settings

rate, seconds = float(sys.argv[1]), float(sys.argv[2])
mw = MonitoringMiddleware(Settings(), registry=CollectorRegistry())
tasks_per_s = rate / 3
n = int(tasks_per_s * seconds)
start = time.perf_counter()
for i in range(n):
    target = start + i / tasks_per_s
    while (delay := target - time.perf_counter()) > 0:
        time.sleep(min(delay, 0.001))
    msg = TaskiqMessage(task_id=f"b{i}", task_name="score_message_task", labels={}, args=[i], kwargs={})
    mw.pre_send(msg)
    mw.post_send(msg)
    mw.pre_execute(msg)
    mw.post_execute(msg, TaskiqResult(is_err=False, return_value=None, execution_time=0.0))
for sink in mw.sinks:
    sink.stop()
print(n * 3, flush=True)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure_latency(ws_url: str, env: dict[str, str], rate: float, seconds: float) -> list[float]:
    from websockets.asyncio.client import connect

    latencies: list[float] = []
    async with connect(ws_url, max_size=2**24) as ws:
        assert json.loads(await ws.recv())["type"] == "live"
        producer = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PRODUCER, str(rate), str(seconds), env=env, stdout=asyncio.subprocess.PIPE
        )
        expected: int | None = None
        wait_out = asyncio.create_task(producer.communicate())
        while expected is None or len(latencies) < expected:
            try:
                raw = await asyncio.wait_for(ws.recv(), 10)
            except TimeoutError:
                break
            now = time.time()
            frame = json.loads(raw)
            if frame["type"] == "event":
                stamp = datetime.fromisoformat(frame["event"]["timestamp"]).timestamp()  # RFC 3339 (record schema 1)
                latencies.append((now - stamp) * 1000)
            if expected is None and wait_out.done():
                expected = int(wait_out.result()[0].decode().split()[-1])
        await wait_out
    return latencies


def hot_path(redis_url: str) -> dict[str, float]:
    from prometheus_client import CollectorRegistry
    from taskiq import TaskiqMessage, TaskiqResult

    from taskiq_monitor.events import TaskEvent
    from taskiq_monitor.middleware import MonitoringMiddleware
    from taskiq_monitor.settings import Settings
    from taskiq_monitor.sinks.state import StateSink

    settings = Settings(redis_url=redis_url, state_buffer_events=1_000_000)
    out: dict[str, float] = {}
    sink = StateSink(settings, registry=CollectorRegistry())
    n = 50_000
    events = [TaskEvent(status="pending", task_id=f"h{i}", task_name="t", timestamp=time.time()) for i in range(n)]
    t0 = time.perf_counter()
    for event in events:
        sink.emit(event)
    out["emit_us"] = (time.perf_counter() - t0) / n * 1e6
    sink.stop()

    def per_task(mw: MonitoringMiddleware, tasks: int) -> float:
        result: TaskiqResult[None] = TaskiqResult(is_err=False, return_value=None, execution_time=0.0)
        msgs = [
            TaskiqMessage(task_id=f"m{i}", task_name="score_message_task", labels={}, args=[i], kwargs={})
            for i in range(tasks)
        ]
        t = time.perf_counter()
        for msg in msgs:
            mw.pre_send(msg)
            mw.post_send(msg)
            mw.pre_execute(msg)
            mw.post_execute(msg, result)
        return (time.perf_counter() - t) / tasks * 1e6

    bare = MonitoringMiddleware(settings, registry=CollectorRegistry(), sinks=[])
    with_state = MonitoringMiddleware(settings, registry=CollectorRegistry(), sinks=[StateSink(settings)])
    per_task(bare, 2000)  # warm-up
    per_task(with_state, 2000)
    out["task_hooks_bare_us"] = statistics.median(per_task(bare, 10_000) for _ in range(3))
    out["task_hooks_state_us"] = statistics.median(per_task(with_state, 10_000) for _ in range(3))
    for s in with_state.sinks:
        s.stop()  # type: ignore[attr-defined]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rate", type=float, default=1000.0, help="state changes per second (default 1000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of the latency run (default 10)")
    args = parser.parse_args()
    redis_bin = shutil.which("redis-server")
    if redis_bin is None:
        print("redis-server not found", file=sys.stderr)
        return 2
    rport, eport = free_port(), free_port()
    tmp = tempfile.mkdtemp(prefix="bench-live-")
    redis = subprocess.Popen(
        [redis_bin, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
        stdout=subprocess.DEVNULL,
    )
    redis_url = f"redis://127.0.0.1:{rport}/0"
    env = dict(os.environ, TASKIQ_MONITOR_REDIS_URL=redis_url)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "exporter"), env.get("PYTHONPATH")]))
    exporter = subprocess.Popen(
        [sys.executable, "-m", "taskiq_monitor.cli", "serve", "--port", str(eport)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{eport}/healthz")
        lat = asyncio.run(measure_latency(f"ws://127.0.0.1:{eport}/ws/events", env, args.rate, args.seconds))
        print(f"live feed latency, worker hook -> WebSocket client, {args.rate:.0f} events/s for {args.seconds:.0f}s:")
        print(
            f"  events received {len(lat)}; p50 {pct(lat, 0.5):.2f} ms, p90 {pct(lat, 0.9):.2f} ms, "
            f"p99 {pct(lat, 0.99):.2f} ms, max {max(lat):.2f} ms"
        )
        hp = hot_path(redis_url)
        print("hot path (this process, Redis reachable, flusher thread running):")
        print(f"  StateSink.emit: {hp['emit_us']:.2f} µs/event")
        print(
            f"  pre_send+post_send+pre_execute+post_execute per task: {hp['task_hooks_bare_us']:.1f} µs without sinks, "
            f"{hp['task_hooks_state_us']:.1f} µs with the state sink "
            f"(+{hp['task_hooks_state_us'] - hp['task_hooks_bare_us']:.1f} µs for 3 events)"
        )
    finally:
        for proc in (exporter, redis):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
