"""CLI: user mistakes get one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "exporter"), full_env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "taskiq_monitor.cli", *args], capture_output=True, text=True, env=full_env, timeout=60
    )


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["frobnicate"], {}, "unknown command 'frobnicate'"),
        (["worker"], {}, "worker needs the broker first"),
        (["worker", "--workers", "2"], {}, "worker needs the broker first"),
        (["serve", "--port", "99999"], {}, "port: Input should be less than or equal to 65535"),
        (["demo", "--rate", "0"], {}, "--rate must be positive"),
        (["demo", "--broker", "amqp://x"], {}, "--broker must be a redis:// URL"),
        (["serve"], {"TASKIQ_MONITOR_DURATION_BUCKETS": "[5, 1]"}, "strictly increasing"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], env: dict[str, str], message: str) -> None:
    result = run_cli(*args, env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_worker_rejects_metrics_dir_that_is_a_file(tmp_path: Path) -> None:
    bad = tmp_path / "file"
    bad.write_text("x")
    result = run_cli("worker", "taskiq_monitor.demo.tasks:broker", "--metrics-dir", str(bad))
    assert result.returncode == 2
    assert "metrics directory" in result.stderr and "Traceback" not in result.stderr


def test_serve_reports_port_in_use() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("serve", "--port", str(port))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_lists_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("worker", "serve", "demo"):
        assert f"taskiq-monitor {command}" in result.stderr


def test_worker_on_busy_port_does_not_wipe_the_running_instance_files(tmp_path: Path) -> None:
    import socket

    live_file = tmp_path / "counter_4242.db"
    live_file.write_bytes(b"a running instance's counts")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli(
            "worker", "taskiq_monitor.demo.tasks:broker", "--metrics-port", str(port), "--metrics-dir", str(tmp_path)
        )
    assert result.returncode == 2
    assert "cannot listen" in result.stderr
    assert live_file.exists(), "a failed second start must not delete the first one's metrics"


def test_worker_refuses_a_metrics_dir_holding_foreign_files_and_deletes_nothing(tmp_path: Path) -> None:
    database = tmp_path / "app.db"
    database.write_bytes(b"an application's SQLite database")
    (tmp_path / "counter_4242.db").write_bytes(b"stale")
    result = run_cli(
        "worker", "taskiq_monitor.demo.tasks:broker", "--metrics-port", "0", "--metrics-dir", str(tmp_path)
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert f"metrics directory {tmp_path} holds files taskiq-monitor did not write (app.db)" in lines[0]
    assert database.read_bytes() == b"an application's SQLite database"
    assert (tmp_path / "counter_4242.db").exists()


def test_serve_refuses_a_metrics_dir_locked_by_another_supervisor(tmp_path: Path) -> None:
    from taskiq_monitor.metricsdir import claim_directory

    with claim_directory(tmp_path, wipe=True):
        result = run_cli("serve", "--port", "0", "--metrics-dir", str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    expected = f"metrics directory {tmp_path} is in use by another taskiq-monitor supervisor (pid {os.getpid()})"
    assert expected in lines[0]


def test_worker_refuses_a_world_writable_metrics_dir(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    result = run_cli("worker", "taskiq_monitor.demo.tasks:broker", "--metrics-port", "0", "--metrics-dir", str(shared))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert f"metrics directory {shared} is writable by other users (mode 0777)" in lines[0]


def test_worker_refuses_a_loki_spool_dir_others_can_write(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    spool.chmod(0o777)
    result = run_cli(
        "worker",
        "taskiq_monitor.demo.tasks:broker",
        "--metrics-port",
        "0",
        "--metrics-dir",
        str(tmp_path / "metrics"),
        env={"TASKIQ_MONITOR_LOKI_URL": "http://127.0.0.1:9", "TASKIQ_MONITOR_LOKI_SPOOL_DIR": str(spool)},
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert f"Loki spool directory {spool} is writable by other users (mode 0777)" in lines[0]
    assert not (tmp_path / "metrics").exists(), "refused before anything was created"


def test_serve_prints_the_dashboard_address_and_it_answers(tmp_path: Path) -> None:
    import re
    import socket
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "exporter"), os.environ.get("PYTHONPATH", "")]))
    env.pop("TASKIQ_MONITOR_REDIS_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskiq_monitor.cli", "serve", "--port", str(port), "--metrics-dir", str(tmp_path)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        lines = [proc.stderr.readline() for _ in range(2)]
        found = re.search(r"web dashboard on (http://\S+/)", lines[1])
        assert found is not None, lines
        assert found.group(1) == f"http://127.0.0.1:{port}/"
        assert "TASKIQ_MONITOR_REDIS_URL" in lines[1]  # why it would be empty, said up front
        with urllib.request.urlopen(found.group(1), timeout=30) as response:
            assert response.status == 200 and b'data-testid="live-status"' in response.read()
    finally:
        proc.terminate()
        proc.wait(30)
