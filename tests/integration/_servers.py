"""`taskiq-monitor worker` processes for the live-feed tests (state in Redis, ready when the API sees every worker),
on free loopback ports and stopped by PID (never by name). Fixture-free helpers, so they do not clash with
conftest.py; the generic ones (free_port, wait_for, stop, RedisServer) live in servers.py."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.integration.servers import ROOT, free_port, stop, wait_for, worker_command

EXPORTER_DIR = ROOT / "exporter"


def child_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TASKIQ_MONITOR_", "PROMETHEUS_MULTIPROC"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(EXPORTER_DIR), env.get("PYTHONPATH")]))
    env["TASKIQ_MONITOR_DEMO_BROKER_URL"] = redis_url
    env["TASKIQ_MONITOR_REDIS_URL"] = redis_url
    env.update(extra)
    return env


class WorkerProcess:
    """``python -m taskiq_monitor.cli worker taskiq_monitor.demo.tasks:broker --workers N --metrics-port P``."""

    def __init__(self, redis_url: str, *, workers: int = 2, extra_args: tuple[str, ...] = (), **env: str) -> None:
        self.port = free_port()
        self.metrics_dir = tempfile.mkdtemp(prefix="taskiq-monitor-metrics-")
        self.log = tempfile.NamedTemporaryFile(prefix="taskiq-monitor-worker-", suffix=".log", delete=False)  # noqa: SIM115
        cmd = worker_command(self.port, self.metrics_dir, workers, extra_args)
        self.proc = subprocess.Popen(cmd, env=child_env(redis_url, **env), stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        token = env.get("TASKIQ_MONITOR_BEARER_TOKEN")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.ws_base = f"ws://127.0.0.1:{self.port}"
        wait_for(self._healthy, 30, f"worker exporter on port {self.port}")
        # Ready when every child process has started (heartbeat) and registered its tasks in the shared state.
        self.workers = workers
        wait_for(self._children_ready, 30, f"{workers} worker processes registered")

    def _children_ready(self) -> bool:
        request = urllib.request.Request(f"{self.base}/api/v1/tasks", headers=self.headers)
        with urllib.request.urlopen(request, timeout=2) as resp:
            body = json.loads(resp.read())
        return bool(body["workers"] == self.workers and body["tasks"])

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"worker exited with {self.proc.returncode}; log: {self.output()[-2000:]}")
        with urllib.request.urlopen(f"{self.base}/healthz", timeout=1) as resp:
            return bool(resp.status == 200)

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self) -> None:
        stop(self.proc, signal.SIGTERM, timeout=30)
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)
        shutil.rmtree(self.metrics_dir, ignore_errors=True)


@contextlib.contextmanager
def worker_process(redis_url: str, **kwargs: Any) -> Iterator[WorkerProcess]:
    worker = WorkerProcess(redis_url, **kwargs)
    try:
        yield worker
    finally:
        worker.stop()
