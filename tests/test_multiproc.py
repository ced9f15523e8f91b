"""Multiprocess directory handling: dead processes' gauges vs counters.

Runs real child processes writing to a real multiprocess directory; prometheus_client must be imported in them
with PROMETHEUS_MULTIPROC_DIR already set, exactly as ``taskiq-monitor worker`` arranges.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from taskiq_monitor.multiproc import live_gauge_pids, reap_dead_processes
from taskiq_monitor.service.collectors import MultiProcessSource

CHILD = textwrap.dedent(
    """
    import sys, time
    from prometheus_client import CollectorRegistry
    from taskiq_monitor.metrics import TaskMetrics
    m = TaskMetrics(registry=CollectorRegistry())
    inst = m.for_task("t")
    inst.started.inc(int(sys.argv[1]))
    inst.running.inc(int(sys.argv[2]))
    print("ready", flush=True)
    time.sleep(float(sys.argv[3]))
    """
)


def spawn(metrics_dir: Path, started: int, running: int, linger: float) -> subprocess.Popen[str]:
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1] / "exporter"), env.get("PYTHONPATH", "")])
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(started), str(running), str(linger)],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def scrape(metrics_dir: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import generate_latest

    text = generate_latest(MultiProcessSource(metrics_dir)).decode()  # type: ignore[arg-type]
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_dead_process_gauge_disappears_but_counters_keep_counting(tmp_path: Path) -> None:
    alive = spawn(tmp_path, started=2, running=1, linger=30)
    doomed = spawn(tmp_path, started=5, running=3, linger=30)
    try:
        key_started = ("taskiq_tasks_started_total", (("task_name", "t"),))
        key_running = ("taskiq_tasks_running", (("task_name", "t"),))
        before = scrape(tmp_path)
        assert before[key_started] == 7
        assert before[key_running] == 4
        doomed.send_signal(signal.SIGKILL)
        doomed.wait()
        after = scrape(tmp_path)  # reaps on every scrape
        assert after[key_started] == 7, "a dead worker's completed work must still count"
        assert after[key_running] == 1, "a dead worker's in-flight tasks must not stay 'running'"
        assert doomed.pid not in live_gauge_pids(tmp_path)
        assert alive.pid in live_gauge_pids(tmp_path)
    finally:
        for p in (alive, doomed):
            p.kill()
            p.wait()


def test_zombie_child_counts_as_dead(tmp_path: Path) -> None:
    # A killed worker child stays a zombie until taskiq's main process reaps it.
    proc = spawn(tmp_path, started=1, running=1, linger=30)
    os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open(f"/proc/{proc.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                break
        time.sleep(0.01)
    assert reap_dead_processes(tmp_path) == [proc.pid]
    proc.wait()


def test_concurrent_scrapes_reap_a_dead_process_without_error(tmp_path: Path) -> None:
    import threading

    errors: list[BaseException] = []
    for _ in range(10):
        proc = spawn(tmp_path, started=1, running=1, linger=30)
        proc.kill()
        proc.wait()
        barrier = threading.Barrier(4)

        def scrape_once(barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                scrape(tmp_path)
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=scrape_once) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
