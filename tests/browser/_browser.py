"""Helpers of the browser tests and of benchmarks/bench_ui.py: Chromium launch, an exporter process
(`taskiq-monitor serve` on the shared Redis) that can be killed and restarted on the same port, and page reads."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from taskiq_monitor.events import TaskEvent
from taskiq_monitor.settings import Settings
from taskiq_monitor.sinks.state import StateSink
from tests.integration._servers import child_env
from tests.integration.servers import free_port, require_binary, stop, wait_for

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]


def launch_browser(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=require_binary("chromium"), args=CHROMIUM_ARGS)


class Exporter:
    """``taskiq-monitor serve`` reading the shared state in Redis; ``kill`` + ``start`` reuse the same port."""

    def __init__(self, redis_url: str, **env: str) -> None:
        self.redis_url = redis_url
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix="taskiq-monitor-serve-", suffix=".log")[1])
        self.proc: subprocess.Popen[Any] | None = None
        self.start()

    def start(self) -> None:
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "taskiq_monitor.cli", "serve", "--port", str(self.port)],
                env=child_env(self.redis_url, **self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._healthy, 30, f"exporter on port {self.port}")

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"exporter exited with {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as resp:
            return bool(resp.status == 200)

    def kill(self) -> None:
        if self.proc is not None:
            stop(self.proc, signal.SIGKILL)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)
        self.log.unlink(missing_ok=True)


def sink(redis_url: str) -> StateSink:
    return StateSink(Settings(redis_url=redis_url), registry=CollectorRegistry())


def event(task_id: str, status: str, task: str, **kw: Any) -> TaskEvent:
    return TaskEvent(status=status, task_id=task_id, task_name=task, timestamp=time.time(), **kw)


def emit_all(redis_url: str, events: list[TaskEvent]) -> None:
    """Write ``events`` to the shared state through a real StateSink, every one of them (no drops)."""
    state = sink(redis_url)
    for e in events:
        while len(state._buffer) >= state._capacity:  # at Redis's pace: these tests want no drops
            time.sleep(0.001)
        state.emit(e)
    wait_for(lambda: state.written == len(events), 30, f"{len(events)} events written ({state.written})")
    state.stop()


def api_get(url: str, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.loads(resp.read())


CARD_NUMBERS_JS = """() => Object.fromEntries([...document.querySelectorAll('[data-testid="task-card"]')].map(card => [
  card.dataset.taskName,
  Object.fromEntries(["pending", "running", "success", "failed"].map(f => [
    f, Number(card.querySelector(`[data-field="${f}"]`).textContent)]))]))"""

FEED_ROWS_JS = """() => [...document.querySelectorAll('[data-testid="feed-row"]')].map(r => ({
  id: r.dataset.eventId, task_id: r.dataset.taskId, task_name: r.dataset.taskName, status: r.dataset.status}))"""


def card_numbers(page: Any) -> dict[str, dict[str, int]]:
    return dict(page.evaluate(CARD_NUMBERS_JS))


def feed_rows(page: Any) -> list[dict[str, str]]:
    return list(page.evaluate(FEED_ROWS_JS))


def api_numbers(body: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {
        t["task_name"]: {
            "pending": t["pending"],
            "running": t["running"],
            "success": t["success_total"],
            "failed": t["failed_total"],
        }
        for t in body["tasks"]
    }
