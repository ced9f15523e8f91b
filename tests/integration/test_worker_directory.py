"""Two real `taskiq-monitor worker` supervisors on different ports and one metrics directory: the second is refused
(exit code 2, one line) and the first keeps counting — it used to be wiped by the second start (50 -> 0)."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import uuid
from pathlib import Path

import pytest

from tests.integration.servers import (
    RedisServer,
    Worker,
    free_port,
    http_get,
    produce,
    sample,
    stop,
    wait_for,
    worker_command,
)

TASK = "embed_message_task"


def successes(worker: Worker) -> float:
    return sample(worker.scrape(), "taskiq_tasks_completed_total", task_name=TASK, status="success")


def test_second_supervisor_on_the_same_directory_is_refused_and_the_first_keeps_its_counts(
    redis_server: RedisServer, workdir: Path
) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    first = Worker(redis_server.url, workdir, queue=queue, workers=1)
    try:
        plan = [(TASK, [1], {"sim": {"sleep": 0.0}}) for _ in range(20)]
        produce(redis_server.url, plan, kind="list", queue=queue)
        wait_for(lambda: successes(first) == 20, 60, "20 successes on the first supervisor")

        second = subprocess.Popen(
            worker_command(free_port(), first.metrics_dir, 1),
            env=dict(first.env, TASKIQ_MONITOR_DEMO_QUEUE_NAME=f"q-{uuid.uuid4().hex[:8]}"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            _, err = second.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            stop(second, group=True)
            pytest.fail("a second supervisor on a directory in use kept running")
        assert second.returncode == 2
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in err
        assert f"metrics directory {first.metrics_dir} is in use by another taskiq-monitor supervisor" in lines[0]

        assert successes(first) == 20, "the refused start must not touch the running supervisor's files"
        produce(redis_server.url, plan[:5], kind="list", queue=queue)
        wait_for(lambda: successes(first) == 25, 60, "later tasks counted on the first supervisor")
    finally:
        assert first.stop() == 0


def test_a_metrics_directory_removed_under_a_running_worker_fails_scrapes_and_probes_in_one_line(
    redis_server: RedisServer, workdir: Path
) -> None:
    worker = Worker(redis_server.url, workdir, queue=f"q-{uuid.uuid4().hex[:8]}", workers=1)
    try:
        produce(
            redis_server.url,
            [(TASK, [1], {"sim": {"sleep": 0.0}})],
            kind="list",
            queue=worker.env["TASKIQ_MONITOR_DEMO_QUEUE_NAME"],
        )
        wait_for(lambda: successes(worker) == 1, 60, "one success")
        shutil.rmtree(worker.metrics_dir)  # a clean-up script, a tmp cleaner
        for _ in range(3):
            with pytest.raises(urllib.error.HTTPError) as scrape:
                http_get(worker.url + "/metrics")
            assert scrape.value.code == 503
            assert scrape.value.read().decode().startswith(f"metrics directory {worker.metrics_dir} does not exist")
        with pytest.raises(urllib.error.HTTPError) as probe:
            http_get(worker.url + "/healthz")
        assert probe.value.code == 503
        assert json.loads(probe.value.read())["status"] == "error"
    finally:
        worker.stop()
    log = (workdir / f"worker-{worker.port}.log").read_text()
    assert "Traceback" not in log, log
    assert log.count(f"taskiq-monitor metrics: metrics directory {worker.metrics_dir} does not exist") == 1, log
