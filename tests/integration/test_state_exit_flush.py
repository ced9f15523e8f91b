"""A real process that sends tasks and returns without ``broker.shutdown()``: its state sink flushes at interpreter
exit. The flusher is a daemon thread; before the exit hook the last batch died with the process, uncounted
(1500 sent, 1484 pending shown)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from taskiq_monitor.settings import Settings
from taskiq_monitor.store import RedisStore
from tests.integration._servers import child_env
from tests.integration.servers import RedisServer, free_port

TASK = "embed_message_task"
N = 1500
# Sends N tasks and returns: no broker.shutdown(), so no sink is closed.
SENDER = (
    "import asyncio, sys\n"
    "from taskiq_monitor.demo.tasks import broker\n"
    "async def main():\n"
    "    await broker.startup()\n"
    "    task = broker.find_task(sys.argv[1])\n"
    "    for _ in range(int(sys.argv[2])):\n"
    "        await task.kiq(1, sim={'sleep': 0.0})\n"
    "asyncio.run(main())\n"
)


def send_and_exit(redis_url: str, state_url: str, prefix: str, metrics_dir: Path) -> None:
    env = child_env(
        redis_url,
        TASKIQ_MONITOR_REDIS_URL=state_url,
        TASKIQ_MONITOR_STATE_KEY_PREFIX=prefix,
        TASKIQ_MONITOR_DEMO_QUEUE_NAME=f"q-{prefix}",  # nobody consumes it: every task stays pending
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    subprocess.run([sys.executable, "-c", SENDER, TASK, str(N)], env=env, check=True, timeout=120)


def state_events(metrics_dir: Path, result: str) -> float:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, str(metrics_dir))
    return registry.get_sample_value("taskiq_monitor_state_events_total", {"result": result}) or 0.0


def test_a_sender_that_exits_without_shutdown_leaves_every_pending_task_in_the_state(
    redis_server: RedisServer, workdir: Path
) -> None:
    prefix = f"exit-{uuid.uuid4().hex[:8]}"
    metrics_dir = workdir / "metrics"
    metrics_dir.mkdir()
    send_and_exit(redis_server.url, redis_server.url, prefix, metrics_dir)

    store = RedisStore(Settings(redis_url=redis_server.url, state_key_prefix=prefix))
    try:
        assert store.snapshot_sync().tasks[TASK].pending == N
    finally:
        store.sync.close()
    assert state_events(metrics_dir, "written") == N
    assert state_events(metrics_dir, "dropped") == 0


def test_a_sender_whose_state_redis_is_down_at_exit_counts_its_events_as_dropped(
    redis_server: RedisServer, workdir: Path
) -> None:
    # The broker's Redis is up, the state's is not (a port nobody listens on): the exit flush gives up at once and
    # counts every event it could not write. The process exits (within the run's timeout) rather than hangs.
    prefix = f"exit-{uuid.uuid4().hex[:8]}"
    metrics_dir = workdir / "metrics"
    metrics_dir.mkdir()
    state_url = f"redis://127.0.0.1:{free_port()}/0"
    send_and_exit(redis_server.url, state_url, prefix, metrics_dir)
    assert state_events(metrics_dir, "written") == 0
    assert state_events(metrics_dir, "dropped") == N
