"""Processes for the Loki integration tests: `taskiq-monitor worker` (real worker processes) and a producer that
enqueues demo tasks through the same middleware, both shipping to the Loki double. Each is started on free loopback
ports, polled until ready (no fixed sleeps) and stopped by its own PID; redis-server and the generic helpers
(free_port, wait_for, stop) come from servers.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.integration.servers import ROOT, free_port, stop, wait_for, worker_command

PYTHONPATH = os.pathsep.join(p for p in [str(ROOT / "exporter"), str(ROOT), os.environ.get("PYTHONPATH", "")] if p)


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    ppid = int(stat.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == parent:
                found.append(int(entry))
                frontier.append(int(entry))
    return found


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def loki_env(redis_url: str, loki_url: str, spool_dir: Path, queue: str, **extra: str) -> dict[str, str]:
    """Environment of every process of a test: demo broker on Redis, shipping to the Loki double, fast timers."""
    env = dict(
        os.environ,
        PYTHONPATH=PYTHONPATH,
        TASKIQ_MONITOR_DEMO_BROKER_URL=redis_url,
        TASKIQ_MONITOR_DEMO_QUEUE_NAME=queue,
        TASKIQ_MONITOR_LOKI_URL=loki_url,
        TASKIQ_MONITOR_LOKI_SPOOL_DIR=str(spool_dir),
        TASKIQ_MONITOR_LOKI_BATCH_WAIT_SECONDS="0.2",
        TASKIQ_MONITOR_LOKI_BACKOFF_INITIAL_SECONDS="0.1",
        TASKIQ_MONITOR_LOKI_BACKOFF_MAX_SECONDS="1",
        TASKIQ_MONITOR_LOKI_RETRIES="1",
        TASKIQ_MONITOR_LOKI_CONNECT_TIMEOUT_SECONDS="1",
        TASKIQ_MONITOR_LOKI_TIMEOUT_SECONDS="1",
        TASKIQ_MONITOR_LOKI_FLUSH_TIMEOUT_SECONDS="2",
        # These tests count delivered records: one per state change, not one per short attempt (coalescing has its
        # own tests, tests/sinks/loki/test_sink.py and tests/integration/test_live_workers.py).
        TASKIQ_MONITOR_EVENTS_COALESCE="false",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(extra)
    return env


class Worker:
    """`taskiq-monitor worker taskiq_monitor.demo.tasks:broker --workers N` (real worker processes)."""

    def __init__(self, env: dict[str, str], workdir: Path, workers: int = 2) -> None:
        self.port = free_port()
        self.workers = workers
        self.log_path = workdir / f"worker-{self.port}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            worker_command(self.port, workdir / f"metrics-{self.port}", workers),
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(lambda: self.get("/healthz"), 30, "the worker's exporter")
        wait_for(lambda: len(self.children()) >= workers, 30, f"{workers} worker children")

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            return str(response.read().decode())

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        total = 0.0
        for family in text_string_to_metric_families(self.get("/metrics")):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def children(self) -> list[int]:
        """The taskiq worker children (python processes two levels below the CLI)."""
        return [pid for main in descendants_direct(self.proc.pid) for pid in descendants_direct(main)]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        code = stop(self.proc, sig, timeout)
        self.log.close()
        return code


def descendants_direct(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as children:
            return [int(p) for p in children.read().split()]
    except OSError:
        return []


PRODUCER = r"""
import asyncio, json, sys, time
from taskiq_monitor.demo.tasks import broker
from taskiq_monitor.demo.workload import next_task
import random

async def main(count: int, rate: float, kind: str) -> None:
    await broker.startup()
    rng = random.Random(7)
    ids = []
    started = time.monotonic()
    for i in range(count):
        if kind == "telegram":
            task = broker.find_task("save_telegram_message")
            args = [{"update_id": i, "message": {"text": "hi", "from": {"auth": {"session_token": "SEKRET-SESSION"}},
                     "links": ["https://bot:SEKRET-URLPASS@hooks.example.invalid/x?token=SEKRET-QUERY"]}}]
            kwargs = {"bot_token": "123456:SEKRET-BOT-TOKEN", "webhook_url": "https://u:SEKRET-HOOK@h.invalid/",
                      "sim": {"fail": "ConnectionError"} if i % 3 == 0 else {}}
        elif kind == "mixed":
            name = ("score_message_task", "detect_language_task", "embed_message_task")[i % 3]
            task = broker.find_task(name)
            args, kwargs = [i], {"sim": {"fail": "ValueError"} if i % 10 == 0 else {}}
        else:
            raise SystemExit(f"unknown kind {kind}")
        result = await task.kiq(*args, **kwargs)
        ids.append(result.task_id)
        if rate:
            delay = started + (i + 1) / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    await broker.shutdown()
    print(json.dumps(ids))

asyncio.run(main(int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]))
"""


def start_producer(env: dict[str, str], count: int, rate: float, kind: str = "mixed") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", PRODUCER, str(count), str(rate), kind],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def producer_ids(proc: subprocess.Popen[str], timeout: float = 120) -> list[str]:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"producer failed ({proc.returncode}): {err[-2000:]}")
    ids: list[str] = json.loads(out.strip().splitlines()[-1])
    return ids
