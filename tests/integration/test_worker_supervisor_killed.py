"""A real `taskiq-monitor worker` supervisor killed with SIGKILL: taskiq's main process and its worker children
stop too (parentdeath.py). They used to run on as orphans, writing into a directory the next supervisor wiped."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest

from taskiq_monitor.multiproc import _pid_alive
from taskiq_monitor.parentdeath import supported
from tests.integration.servers import RedisServer, Worker, children, produce, sample, wait_for

pytestmark = pytest.mark.skipif(not supported(), reason="PR_SET_PDEATHSIG is Linux only")


def test_every_process_of_the_worker_stops_when_its_supervisor_is_sigkilled(
    redis_server: RedisServer, workdir: Path
) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    worker = Worker(redis_server.url, workdir, queue=queue, workers=2)
    try:
        plan = [("embed_message_task", [1], {"sim": {"sleep": 0.0}}) for _ in range(10)]
        produce(redis_server.url, plan, kind="list", queue=queue)
        wait_for(
            lambda: (
                sample(worker.scrape(), "taskiq_tasks_completed_total", task_name=plan[0][0], status="success") == 10
            ),
            60,
            "the workers running tasks",
        )
        taskiq_main = children(worker.proc.pid)
        assert len(taskiq_main) == 1
        tree = [*taskiq_main, *worker.child_pids()]
        assert len(tree) == 3

        os.kill(worker.proc.pid, signal.SIGKILL)
        assert worker.proc.wait(30) == -signal.SIGKILL
        # Nobody reaps the orphans here but PID 1 (maybe not at all in a container): a zombie counts as stopped.
        try:
            wait_for(lambda: not [pid for pid in tree if _pid_alive(pid)], 60, f"every process of {tree} stopped")
        except AssertionError as exc:
            # Seen once on a machine loaded far beyond its cores: say which process hung where, for the next time.
            raise AssertionError(f"{exc}\n{_where(tree)}\nlog: {_tail(Path(worker.log.name))}") from None
    finally:
        worker.stop()


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-3000:]
    except OSError as exc:
        return f"(unreadable: {exc})"


def _where(pids: list[int]) -> str:
    """Each live process's state and kernel wait channel, with its command line."""
    lines = []
    for pid in pids:
        if not _pid_alive(pid):
            continue
        proc = Path(f"/proc/{pid}")
        try:
            state = next(line for line in (proc / "status").read_text().splitlines() if line.startswith("State:"))
            wchan = (proc / "wchan").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, StopIteration):
            continue
        lines.append(f"pid {pid}: {state}, waiting in {wchan or '-'}: {cmdline[:200]}")
    return "\n".join(lines) or "(none alive any more)"
