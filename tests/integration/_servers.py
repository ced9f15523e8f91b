"""Real servers for the live-feed tests: redis-server and `taskiq-monitor worker` processes, started on free
loopback ports and stopped by PID (never by name). Fixture-free helpers, so they do not clash with conftest.py."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
EXPORTER_DIR = REPO / "exporter"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns a truthy value; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the server may still be starting
            last_exc = exc
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last_exc!r})" if last_exc else "")
    )


def _stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


class RedisServer:
    """A throw-away redis-server (no persistence) on a free loopback port; ``stop``/``start`` simulate an outage."""

    def __init__(self) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.mkdtemp(prefix="taskiq-monitor-redis-")
        self.proc: subprocess.Popen[Any] | None = None
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self.ping, 10, f"redis-server on port {self.port}")

    def ping(self) -> bool:
        client = self.client()
        try:
            return bool(client.ping())
        finally:
            client.close()

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server
    finally:
        server.cleanup()


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
        cmd = [
            sys.executable,
            "-m",
            "taskiq_monitor.cli",
            "worker",
            "taskiq_monitor.demo.tasks:broker",
            "--workers",
            str(workers),
            "--metrics-port",
            str(self.port),
            "--metrics-dir",
            self.metrics_dir,
            *extra_args,
        ]
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
        import json

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
        _stop(self.proc, signal.SIGTERM, timeout=30)
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
