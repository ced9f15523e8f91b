"""The compose stack's `app` service: the demo producer enqueues into Redis and serves its enqueue metrics."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from taskiq_monitor.demo.producer import main
from tests.integration.servers import RedisServer

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def redis_url(redis_srv: RedisServer) -> str:
    return redis_srv.url


def producer_env(broker_url: str) -> dict[str, str]:
    env = dict(os.environ, TASKIQ_MONITOR_DEMO_BROKER_URL=broker_url, PYTHONPATH=str(REPO / "exporter"))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("TASKIQ_MONITOR_OTLP_ENDPOINT", None)
    env.pop("TASKIQ_MONITOR_REDIS_URL", None)
    return env


def test_producer_refuses_to_start_without_broker_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKIQ_MONITOR_DEMO_BROKER_URL", raising=False)
    assert main(["--port", str(free_port())]) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate", "nan"], "--rate must be a positive number"),
        (["--rate", "inf"], "--rate must be a positive number"),
        (["--rate", "0"], "--rate must be a positive number"),
        (["--duration", "nan"], "--duration must be a positive number"),
        (["--port", "0"], "port: Input should be greater than or equal to 1"),
    ],
)
def test_producer_refuses_bad_options_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    monkeypatch.setenv("TASKIQ_MONITOR_DEMO_BROKER_URL", "redis://127.0.0.1:1/0")  # never reached
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_producer_enqueues_and_serves_enqueue_metrics(redis_url: str) -> None:
    port = free_port()
    env = dict(os.environ, TASKIQ_MONITOR_DEMO_BROKER_URL=redis_url, PYTHONPATH=str(REPO / "exporter"))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("TASKIQ_MONITOR_OTLP_ENDPOINT", None)
    cmd = [sys.executable, "-m", "taskiq_monitor.demo.producer", "--port", str(port), "--rate", "50", "--seed", "1"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        body, deadline = "", time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
                    body = response.read().decode()
                enqueued = sum(
                    float(line.rsplit(" ", 1)[1])
                    for line in body.splitlines()
                    if line.startswith("taskiq_tasks_enqueued_total{")
                )
                if enqueued >= 10:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        assert "taskiq_tasks_enqueued_total{" in body
        assert enqueued >= 10
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
            assert response.status == 200
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0, proc.stderr.read() if proc.stderr else ""


def test_producer_with_unreachable_redis_says_so_in_one_line_without_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()  # nothing listens there
    monkeypatch.setenv("TASKIQ_MONITOR_DEMO_BROKER_URL", f"redis://:hunter2pw@127.0.0.1:{port}/0")
    assert main(["--port", str(free_port()), "--duration", "3"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"cannot reach the Redis of TASKIQ_MONITOR_DEMO_BROKER_URL at 127.0.0.1:{port}" in err
    assert "hunter2pw" not in err


def test_producer_names_its_redis_without_the_password() -> None:
    server = RedisServer(password="hunter2pw")
    try:
        cmd = [sys.executable, "-m", "taskiq_monitor.demo.producer", "--port", str(free_port()), "--duration", "1"]
        result = subprocess.run(cmd, env=producer_env(server.url), capture_output=True, text=True, timeout=60)
    finally:
        server.cleanup()
    assert result.returncode == 0, result.stderr
    assert f"into the Redis at 127.0.0.1:{server.port};" in result.stderr
    assert "hunter2pw" not in result.stderr + result.stdout


def test_producer_that_loses_its_redis_says_so_in_one_line(redis_srv: RedisServer) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "taskiq_monitor.demo.producer", "--port", str(port), "--rate", "50"]
    proc = subprocess.Popen(cmd, env=producer_env(redis_srv.url), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while _enqueued(port) == 0:  # the producer is in its enqueue loop
            assert proc.poll() is None and time.monotonic() < deadline, "the producer never enqueued"
            time.sleep(0.1)
        redis_srv.stop()
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 2, err
    assert "Traceback" not in err, err
    assert f"producer: lost the Redis at 127.0.0.1:{redis_srv.port}:" in err


def _enqueued(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
            body = response.read().decode()
    except OSError:
        return 0
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith("taskiq_tasks_enqueued_total{")
    )
