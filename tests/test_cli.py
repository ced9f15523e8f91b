"""CLI: user mistakes get one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import logging
import os
import re
import socket
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest

from taskiq_monitor import cli
from taskiq_monitor.settings import Settings
from tests.integration.servers import RedisServer

ROOT = Path(__file__).parents[1]


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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
        (["demo", "--rate", "0"], {}, "--rate must be a positive number"),
        (["demo", "--broker", "amqp://x"], {}, "--broker must be a redis://, rediss:// or unix:// URL"),
        (["serve"], {"TASKIQ_MONITOR_DURATION_BUCKETS": "[5, 1]"}, "strictly increasing"),
        # Port 0 would print ":0" addresses and share /tmp/taskiq-monitor-<uid>-0 between supervisors.
        (["serve", "--port", "0"], {}, "port: Input should be greater than or equal to 1"),
        (["worker", "app:broker", "--metrics-port", "0"], {}, "port: Input should be greater than or equal to 1"),
        (["serve"], {"TASKIQ_MONITOR_PORT": "0"}, "port: Input should be greater than or equal to 1"),
        # NaN or infinite rates never pause the enqueue loop; --workers below 1 used to reach taskiq.
        (["demo", "--rate", "nan"], {}, "--rate must be a positive number"),
        (["demo", "--rate", "inf"], {}, "--rate must be a positive number"),
        (["demo", "--duration", "nan"], {}, "--duration must be a positive number"),
        (["demo", "--duration", "inf"], {}, "--duration must be a positive number"),
        (["demo", "--duration", "-1"], {}, "--duration must be a positive number"),
        (["demo", "--workers", "-3", "--broker", "redis://127.0.0.1:1/0"], {}, "--workers must be at least 1"),
        (["demo", "--workers", "0"], {}, "--workers must be at least 1"),
        (["serve"], {"TASKIQ_MONITOR_GRAFANA_URL": "grafana:3000"}, "grafana_url: Value error, must be an http://"),
        (["serve"], {"TASKIQ_MONITOR_OTLP_ENDPOINT": "tempo:4318"}, "otlp_endpoint: Value error, must be an http://"),
        (["serve"], {"TASKIQ_MONITOR_REDACT_KEYS": '{"a": 1}'}, "redact_keys: Value error, must be a JSON list"),
    ],
)
def test_usage_errors_are_one_line(args: list[str], env: dict[str, str], message: str) -> None:
    result = run_cli(*args, env=env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "url", ["http://user:hunter2@x", "amqp://:hunter2@rabbit/", "localhost:6379:hunter2", "  //:hunter2@h"]
)
def test_demo_broker_errors_never_repeat_the_url(url: str) -> None:
    result = run_cli("demo", "--broker", url)
    assert result.returncode == 2
    assert "--broker must be a redis://" in result.stderr
    assert "hunter2" not in result.stderr and url.strip() not in result.stderr


def test_demo_with_unreachable_redis_says_so_in_one_line_before_any_banner() -> None:
    port = free_port()  # nothing listens there
    result = run_cli(
        "demo", "--port", str(free_port()), "--duration", "3", "--broker", f"redis://:hunter2@127.0.0.1:{port}/0"
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot reach the Redis of --broker at 127.0.0.1:{port}" in lines[0]
    assert "hunter2" not in result.stderr
    assert "dashboard on" not in result.stderr, "no banner for a demo that cannot run"


def test_demo_with_redis_on_a_port_another_exporter_holds_exits_2_without_a_banner(redis_srv: RedisServer) -> None:
    # The other exporter answers /healthz too: the demo must not take it for the worker it started, announce a
    # dashboard that is not its own, and crash on the metrics directory that worker never created.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "exporter"), os.environ.get("PYTHONPATH", "")]))
    port = free_port()
    other = subprocess.Popen(
        [sys.executable, "-m", "taskiq_monitor.cli", "serve", "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert other.stderr is not None and "serving" in other.stderr.readline()
        result = run_cli("demo", "--broker", redis_srv.url, "--port", str(port), "--duration", "3")
    finally:
        other.terminate()
        other.wait(30)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "dashboard on" not in result.stderr, "no banner for a demo that cannot run"


def test_demo_on_an_ipv6_address_prints_addresses_that_work() -> None:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
            port = probe.getsockname()[1]
    except OSError:
        pytest.skip("no IPv6 loopback here")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "exporter"), os.environ.get("PYTHONPATH", "")]))
    env.pop("TASKIQ_MONITOR_BEARER_TOKEN", None)
    cmd = [sys.executable, "-m", "taskiq_monitor.cli", "demo", "--host", "::1", "--port", str(port), "--rate", "5"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stderr is not None
        banner = [proc.stderr.readline() for _ in range(6)]
        dashboard = re.search(r"dashboard on (\S+)", banner[0])
        tail = re.search(r"taskiq-monitor tail --url (\S+)", "".join(banner))
        assert dashboard is not None and tail is not None, banner
        assert dashboard.group(1) == f"http://[::1]:{port}/"
        with urllib.request.urlopen(dashboard.group(1), timeout=30) as response:
            assert response.status == 200
        summary = run_cli("tail", "--url", tail.group(1), "--summary")  # the command it suggests, as printed
        assert summary.returncode == 0, summary.stderr
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuch.module:broker", "cannot import nosuch.module: no module named nosuch"),
        ("nosuchformat", "'nosuchformat' is not MODULE:BROKER (one colon), e.g. app.tasks:broker"),
        ("app.tasks:broker:x", "is not MODULE:BROKER (one colon)"),
        ("my-app:broker", "is not MODULE:BROKER (dotted Python names)"),
        ("taskiq_monitor.demo.tasks:brokr", "module taskiq_monitor.demo.tasks has no attribute 'brokr'"),
        ("taskiq_monitor.demo.tasks:TIMEOUT_TASK_SECONDS", "has type float, not a taskiq broker"),
        ("json:loads", "calling json:loads() failed: TypeError"),  # taskiq would call it as a broker factory
    ],
)
def test_worker_with_a_broker_taskiq_cannot_load_exits_2_instead_of_restarting_forever(spec: str, message: str) -> None:
    # Before the check, taskiq restarted the failing worker processes every second: run_cli's timeout would fire.
    result = run_cli("worker", spec, "--metrics-port", str(free_port()))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert message in lines[0]


def test_worker_imports_the_broker_as_taskiq_does_with_app_dir(tmp_path: Path) -> None:
    (tmp_path / "monitored_app.py").write_text(
        "print('imported')\n"
        "from taskiq import InMemoryBroker\n"
        "broker = InMemoryBroker()\n"
        "def make_broker():\n    return InMemoryBroker()\n"
        "def make_nothing():\n    return 42\n"
        "def make_failing():\n    raise RuntimeError('no route to redis://:hunter2@db:6379/0')\n"
    )
    with socket.socket() as busy:  # the check passes, then the port is busy: exit 2 without starting taskiq
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for spec in ("monitored_app:broker", "monitored_app:make_broker"):
            passed = run_cli("worker", spec, "--app-dir", str(tmp_path), "--metrics-port", port)
            assert "cannot listen" in passed.stderr, passed.stderr
        without_dir = run_cli("worker", "monitored_app:broker", "--metrics-port", port)
        nothing = run_cli("worker", "monitored_app:make_nothing", "-d", str(tmp_path), "--metrics-port", port)
        failing = run_cli("worker", "monitored_app:make_failing", f"--app-dir={tmp_path}", "--metrics-port", port)
    assert "cannot import monitored_app: no module named monitored_app" in without_dir.stderr
    assert "monitored_app:make_nothing() returns a value of type int, not a taskiq broker" in nothing.stderr
    assert "calling monitored_app:make_failing() failed: RuntimeError: no route to redis://:***@db" in failing.stderr
    for result in (without_dir, nothing, failing):
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "hunter2" not in failing.stderr


@pytest.mark.parametrize(
    ("host", "token", "warned"),
    [
        ("0.0.0.0", None, True),
        ("::", None, True),
        ("192.0.2.7", None, True),
        ("monitor.example.com", None, True),
        ("0.0.0.0", "s3cret", False),
        ("127.0.0.1", None, False),
        ("127.0.0.2", None, False),
        ("::1", None, False),
        ("localhost", None, False),
    ],
)
def test_an_exporter_open_to_the_network_without_a_token_is_warned_about(
    host: str, token: str | None, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="taskiq_monitor.cli"):
        cli._warn_if_open(Settings(host=host, bearer_token=token))
    assert ("reachable from the network, without a bearer token" in caplog.text) is warned


def test_serve_on_all_interfaces_without_a_token_warns_at_start_up(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "exporter"), os.environ.get("PYTHONPATH", "")]))
    env.pop("TASKIQ_MONITOR_BEARER_TOKEN", None)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskiq_monitor.cli", "serve", "--host", "0.0.0.0", "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        lines = [proc.stderr.readline() for _ in range(3)]
    finally:
        proc.terminate()
        proc.wait(30)
    assert "WARNING" in lines[0] and f"listens on 0.0.0.0:{port}, reachable from the network" in lines[0], lines
    assert "TASKIQ_MONITOR_BEARER_TOKEN" in lines[0]


def test_version_is_the_package_version() -> None:
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"taskiq-monitor {expected}"


def usage_line(command: str) -> str:
    (line,) = [line.strip() for line in cli.USAGE.splitlines() if line.strip().startswith(f"taskiq-monitor {command} ")]
    return line


@pytest.mark.parametrize("command", ["worker", "serve", "demo", "tail"])
def test_usage_names_every_option_of_the_command_and_the_readme_repeats_it(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "app:broker", "--help"] if command == "worker" else [command, "--help"])
    assert exited.value.code == 0
    help_text = capsys.readouterr().out
    options = set(re.findall(r"^\s{2}(?:-\w, )?(--[\w-]+)", help_text, re.M)) - {"--help"}
    line = usage_line(command)
    assert set(re.findall(r"\[(--[\w-]+)", line)) == options
    assert f"| `{line}` |" in (ROOT / "README.md").read_text(), "the README's command table differs from USAGE"


def test_worker_help_says_where_taskiq_worker_options_are() -> None:
    result = run_cli("worker", "app.tasks:broker", "--help")
    assert result.returncode == 0
    assert "taskiq worker --help" in result.stdout
    assert "`taskiq worker --help`" in cli.USAGE


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
        "worker", "taskiq_monitor.demo.tasks:broker", "--metrics-port", str(free_port()), "--metrics-dir", str(tmp_path)
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
        result = run_cli("serve", "--port", str(free_port()), "--metrics-dir", str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    expected = f"metrics directory {tmp_path} is in use by another taskiq-monitor supervisor (pid {os.getpid()})"
    assert expected in lines[0]


def test_worker_refuses_a_world_writable_metrics_dir(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    result = run_cli(
        "worker", "taskiq_monitor.demo.tasks:broker", "--metrics-port", str(free_port()), "--metrics-dir", str(shared)
    )
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
        str(free_port()),
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
