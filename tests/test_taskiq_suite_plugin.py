"""tools/taskiq_suite/taskiq_suite_plugin.py: attaches the middleware to every broker, and fails a run it did not
monitor (so a taskiq upgrade that bypasses the patch cannot pass silently)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PLUGIN_DIR = ROOT / "tools" / "taskiq_suite"

MONITORED = """
from taskiq import InMemoryBroker, TaskiqMiddleware
from taskiq_monitor.middleware import MonitoringMiddleware

class Other(TaskiqMiddleware):
    pass

async def test_a_task_runs_and_the_middleware_sits_where_asked() -> None:
    broker = InMemoryBroker(await_inplace=True)
    broker.add_middlewares(Other())
    ours = [isinstance(m, MonitoringMiddleware) for m in broker.middlewares]
    print("ORDER", ours)

    @broker.task(task_name="double")
    async def double(x: int) -> int:
        return 2 * x

    await broker.startup()
    assert (await (await double.kiq(21)).wait_result()).return_value == 42
    await broker.shutdown()
"""

UNMONITORED = """
def test_no_broker_at_all() -> None:
    assert True
"""


def run(tmp_path: Path, source: str, position: str, sinks: str = "default") -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(source)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(PLUGIN_DIR), str(ROOT / "exporter")]),
        TASKIQ_SUITE_POSITION=position,
        TASKIQ_SUITE_SINKS=sinks,
    )
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-p", "taskiq_suite_plugin"]
    command += ["-p", "anyio", "-o", "anyio_mode=auto", "-p", "no:asyncio", "--rootdir", str(tmp_path), str(tmp_path)]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("position", "order"), [("first", "[True, False]"), ("last", "[False, True]")])
def test_the_middleware_is_attached_at_the_requested_position(tmp_path: Path, position: str, order: str) -> None:
    result = run(tmp_path, MONITORED, position, sinks="loki")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"ORDER {order}" in result.stdout
    assert f"attached to 1 brokers (position {position}, sinks loki)" in result.stderr


def test_a_run_that_monitored_nothing_fails(tmp_path: Path) -> None:
    result = run(tmp_path, UNMONITORED, "last")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert "FAILED: no broker was created" in result.stderr
