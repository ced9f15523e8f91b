"""`taskiq-monitor tail`: one line per event, the record's own timestamp, colours only when asked; user mistakes get
one line, exit 2 and never the URL's password."""

from __future__ import annotations

import http.server
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from taskiq_monitor.events import TaskEvent, to_record
from taskiq_monitor.tail import clean, default_url, format_event, url_problem

ROOT = Path(__file__).parents[1]


def test_event_line_shows_the_records_time_status_and_task() -> None:
    moment = datetime(2026, 11, 28, 12, 34, 56, 789000, tzinfo=UTC)
    event = TaskEvent(status="failed", task_id="abc123", task_name="score_message_task", timestamp=moment.timestamp())
    event.error_type, event.error_message = "ValueError", "bad input"
    line = format_event({"type": "event", "id": "1-0", "event": to_record(event)}, color=False)
    assert moment.astimezone().strftime("%H:%M:%S.789") in line
    assert "failed" in line and "score_message_task" in line and "ValueError" in line
    assert "\x1b[" not in line


def test_event_line_is_coloured_on_request() -> None:
    event = TaskEvent(status="success", task_id="t", task_name="x", timestamp=0.0)
    assert "\x1b[" in format_event({"type": "event", "id": "1-0", "event": to_record(event)}, color=True)


def test_event_line_strips_escape_sequences_and_control_characters() -> None:
    event = TaskEvent(status="failed", task_id="id\x1b]0;pwned\x07", task_name="a\x1b[2Jb\rc", timestamp=0.0)
    event.error_type, event.error_message = "E\x9b31m", "line1\nline2\x1b[8mhidden\x1bc"
    for color in (False, True):
        line = format_event({"type": "event", "id": "1-0", "event": to_record(event)}, color=color)
        body = line.removeprefix("\x1b[31m").removesuffix("\x1b[0m") if color else line
        assert not any(ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F for ch in body), repr(body)
        assert "abc" in body and "line1line2hidden" in body and "pwned" not in body
    assert clean("ok\x1b[1;31mred\x1b[0m\ttab") == "okredtab"


def test_tail_reads_v2_batches_and_v1_frames() -> None:
    from taskiq_monitor.tail import events_of

    items = [{"id": f"1-{i}", "event": {"task_name": "t", "status": "success"}} for i in range(3)]
    assert events_of({"type": "events", "v": 2, "events": items}) == items
    assert events_of({"type": "event", **items[0]}) == [{"type": "event", **items[0]}]
    assert events_of({"type": "ping", "ts": 1.0}) == []


def test_tail_asks_for_v2_and_sends_the_token_in_a_header_never_the_url() -> None:
    import io

    from taskiq_monitor.tail import Tail

    tail = Tail("http://127.0.0.1:9808", "s3cret", ["a"], ["failed"], "1-0", None, False, io.StringIO())
    url = tail.ws_url()
    assert url.startswith("ws://127.0.0.1:9808/ws/events?v=2&") and "s3cret" not in url
    assert "task_name=a" in url and "status=failed" in url and "last_event_id=1-0" in url
    assert tail._headers() == {"Authorization": "Bearer s3cret"}


def _failed(task_id: str, status: str = "failed") -> str:
    event = TaskEvent(status=status, task_id=task_id, task_name="score_message_task", timestamp=0.0)
    event.error_type, event.error_message = "ValueError", "bad input"
    return format_event({"type": "event", "id": "1-0", "event": to_record(event)}, False, "http://h:9808/")


def test_failed_event_line_links_to_the_error_detail_of_the_whole_task_id() -> None:
    task_id = "0123456789abcdef0123456789abcdef"
    line = _failed(task_id)
    assert line.endswith(f"detail: GET http://h:9808/api/v1/executions/{task_id}")
    assert task_id[:12] in line.split("detail:")[0] and task_id not in line.split("detail:")[0]
    for status in ("success", "retried", "running"):
        assert "/api/v1/executions/" not in _failed(task_id, status), status


def test_error_detail_link_quotes_the_task_id_into_one_path_segment() -> None:
    line = _failed("a/b?c#d e\x1b[2J")
    assert line.endswith("/api/v1/executions/a%2Fb%3Fc%23d%20e%1B%5B2J")


def test_error_detail_link_is_the_exporters_execution_route() -> None:
    from taskiq_monitor.service.app import create_app
    from taskiq_monitor.settings import Settings
    from taskiq_monitor.tail import execution_url

    app = create_app(Settings(redis_url="redis://127.0.0.1:1/0"))  # routes only: nothing connects
    template = "/api/v1/executions/{task_id}"
    assert "get" in app.openapi()["paths"][template]
    assert execution_url("http://h:1/", "abc-123") == "http://h:1" + template.format(task_id="abc-123")


def test_a_final_event_shows_its_queue_wait_for_an_attempt_whose_running_event_was_coalesced() -> None:
    def line(status: str, **kw: object) -> str:
        event = TaskEvent(status, "abc", "score", 1_700_000_000.0, queue_wait_seconds=0.25, **kw)  # type: ignore[arg-type]
        return format_event({"type": "event", "id": "1-0", "event": to_record(event)}, color=False)

    assert "waited=250ms" in line("success", duration_seconds=0.01)
    assert "waited=250ms" in line("running")
    assert "waited" not in line("pending")


def _run_tail(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ, **(env or {}))
    full_env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "exporter"), full_env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "taskiq_monitor.cli", "tail", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://u:hunter2@h", "--url must start with http:// or https://"),
        ("http://u:hunter2@127.0.0.1:abc", "--url is not a valid URL"),
        ("http://u:hunter2@[::1", "--url is not a valid URL"),
        ("http://", "--url has no host name"),
    ],
)
def test_a_bad_url_is_one_line_that_does_not_repeat_it(url: str, message: str) -> None:
    result = _run_tail("--summary", "--url", url)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and "hunter2" not in result.stderr


def test_an_unreachable_exporter_is_named_without_its_password() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = _run_tail("--summary", "--url", f"http://admin:pw_secret9@127.0.0.1:{port}")
    assert result.returncode == 2
    assert f"cannot read http://127.0.0.1:{port}/api/v1/tasks" in result.stderr
    assert "pw_secret9" not in result.stderr + result.stdout


class _Refusing(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(401)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_refusing_exporter_is_one_line_without_the_urls_password() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        result = _run_tail("--summary", "--url", f"http://admin:pw_secret9@127.0.0.1:{port}")
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 3  # as when the live feed refuses the token
    assert "unauthorized" in result.stderr and "TASKIQ_MONITOR_BEARER_TOKEN" in result.stderr
    assert "pw_secret9" not in result.stderr + result.stdout  # httpx logs request URLs at INFO, password included


def test_an_ipv6_bind_address_makes_a_bracketed_url() -> None:
    assert default_url("::1", 9808) == "http://[::1]:9808"
    assert default_url("127.0.0.1", 9808) == "http://127.0.0.1:9808"
    assert url_problem(default_url("::1", 9808)) is None


def test_an_unknown_status_lists_the_statuses_by_name() -> None:
    result = _run_tail("--status", "bogus")
    assert result.returncode == 2
    assert "'pending', 'running', 'success'" in result.stderr and "TaskStatus" not in result.stderr


TOKEN = "tail-test-token"


@pytest.fixture(scope="module")
def protected_demo() -> Iterator[str]:
    """The in-memory demo (a real exporter with a steady feed of events), behind a bearer token."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKIQ_MONITOR_")}
    env.update(PYTHONPATH=str(ROOT / "exporter"), TASKIQ_MONITOR_BEARER_TOKEN=TOKEN)
    cmd = [sys.executable, "-m", "taskiq_monitor.cli", "demo", "--port", str(port), "--rate", "50"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=2):
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the demo did not start"
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _tail_into(stdout: int, *args: str, token: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKIQ_MONITOR_")}
    env["PYTHONPATH"] = str(ROOT / "exporter")
    if token is not None:
        env["TASKIQ_MONITOR_BEARER_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "taskiq_monitor.cli", "tail", *args],
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.mark.parametrize("args", [["--count", "100000"], ["--summary"]])
def test_tail_stops_quietly_when_its_reader_closes_the_pipe(protected_demo: str, args: list[str]) -> None:
    # `taskiq-monitor tail | head -3`: head exits, the next write fails with EPIPE. Closing the read end first makes
    # that the very first write, whatever the timing.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = _tail_into(write_end, "--url", protected_demo, *args, token=TOKEN)
    finally:
        os.close(write_end)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Broken pipe" not in result.stderr, result.stderr
    assert "reconnecting" not in result.stderr  # a closed output is no dropped connection


@pytest.mark.parametrize("args", [[], ["--summary"]])
def test_a_refused_token_is_said_on_stderr_with_exit_code_3(protected_demo: str, args: list[str]) -> None:
    # `tail > events.log` with a wrong token: the reason must reach the terminal, not the file.
    result = _tail_into(subprocess.PIPE, "--url", protected_demo, *args, token="wrong-token")
    assert result.returncode == 3, result.stderr
    assert result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("taskiq-monitor tail: unauthorized:"), line


class _NotAnExporter(http.server.BaseHTTPRequestHandler):
    """Some other web server on the port (--url mistyped): answers every path with ``status``."""

    status = 404

    def do_GET(self) -> None:
        self.send_response(self.status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize(
    ("protocol", "status", "code"),
    [("HTTP/1.0", 404, 2), ("HTTP/1.1", 404, 2), ("HTTP/1.1", 403, 2), ("HTTP/1.1", 200, 2), ("HTTP/1.1", 401, 3)],
)
def test_a_url_that_is_no_exporter_is_one_line_not_a_traceback_or_endless_retries(
    protocol: str, status: int, code: int
) -> None:
    handler = type("Handler", (_NotAnExporter,), {"protocol_version": protocol, "status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://admin:pw_secret9@127.0.0.1:{server.server_address[1]}"
        result = _tail_into(subprocess.PIPE, "--url", url, token=None)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr and "reconnecting" not in result.stderr, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("taskiq-monitor tail: "), line
    assert "pw_secret9" not in result.stderr + result.stdout


def test_a_refused_handshake_names_the_exporters_own_reason() -> None:
    # Behind a name the exporter does not answer to, it refuses with its reason: say that, not "wrong --url?".
    import io

    from websockets.datastructures import Headers
    from websockets.exceptions import InvalidStatus
    from websockets.http11 import Response

    from taskiq_monitor.tail import Tail

    tail = Tail("http://monitor.internal:9808", None, [], [], None, None, False, io.StringIO())
    body = b'{"detail": {"error": "host_not_allowed", "message": "Host \'monitor.internal\' is not a name of this"}}'
    refused = tail._no_feed(InvalidStatus(Response(400, "Bad Request", Headers(), body)))
    assert refused is not None and "Host 'monitor.internal' is not a name of this" in str(refused)
    host = tail._no_feed(InvalidStatus(Response(403, "Forbidden", Headers(), b"")))
    assert host is not None and "TASKIQ_MONITOR_ALLOWED_HOSTS" in str(host)
    other = tail._no_feed(InvalidStatus(Response(404, "Not Found", Headers(), b"<html>nope</html>")))
    assert other is not None and "is --url a taskiq-monitor exporter, and its base URL?" in str(other)
    assert tail._no_feed(InvalidStatus(Response(502, "Bad Gateway", Headers(), b""))) is None  # restarting: retry
