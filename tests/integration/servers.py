"""Real servers for integration tests: redis-server, prometheus and `taskiq-monitor worker`, started on free
loopback ports, polled until ready (never a fixed sleep), and stopped by their own PID."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from taskiq_monitor.multiproc import live_gauge_pids

ROOT = Path(__file__).parents[2]
PYTHONPATH = os.pathsep.join(p for p in [str(ROOT / "exporter"), os.environ.get("PYTHONPATH", "")] if p)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``check`` until it returns a truthy value; fail with ``what`` and the last error after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
            last = result
        except Exception as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 30, group: bool = False) -> int:
    """Signal ``proc`` and wait; past ``timeout`` kill it — with ``group``, its whole process group (workers)."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            if group:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                proc.kill()
            proc.wait()
    if group:
        # Nothing of the run may outlive the test (taskiq's main process and its children included).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    return int(proc.returncode)


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed; `make test` installs it (apt-get)")
    return path


def _redis_command(workdir: Path, *options: str) -> list[str]:
    """A throw-away redis-server's command line: no persistence, files in ``workdir``, plus ``options``."""
    persistence = ["--save", "", "--appendonly", "no", "--dir", str(workdir), "--loglevel", "warning"]
    return [require_binary("redis-server"), *options, *persistence]


class RedisServer:
    """A throw-away redis-server (no persistence) on a free loopback port.

    Its files live in ``workdir``, or in a temporary directory that :meth:`cleanup` removes. ``stop`` then
    ``start`` simulate an outage: the same port and directory (a ``SHUTDOWN SAVE`` is reloaded on restart). With
    ``password``, clients must authenticate (``requirepass``), and ``url`` carries the password.
    """

    def __init__(self, workdir: Path | None = None, *, password: str | None = None) -> None:
        self.port = free_port()
        self.password = password
        auth = f":{password}@" if password else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self._own_dir = workdir is None
        self.dir = Path(tempfile.mkdtemp(prefix="taskiq-monitor-redis-")) if workdir is None else workdir
        self.proc: subprocess.Popen[Any] | None = None
        self.start()

    def start(self) -> None:
        listen = ["--port", str(self.port), "--bind", "127.0.0.1"]
        auth = ["--requirepass", self.password] if self.password else []
        self.proc = subprocess.Popen(_redis_command(self.dir, *listen, *auth), stdout=subprocess.DEVNULL)
        wait_for(self.ping, 15, f"redis-server on port {self.port}")

    def ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            if not self.password:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
            s.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
            reply = b""
            while b"\r\n" not in reply.partition(b"\r\n")[2]:  # both replies: +OK, then +PONG
                chunk = s.recv(64)
                if not chunk:
                    break
                reply += chunk
            return reply == b"+OK\r\n+PONG\r\n"

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    def cleanup(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class UnixRedisServer(RedisServer):
    """A throw-away redis-server listening on a unix socket only (``--port 0``), for ``unix://`` URLs."""

    def __init__(self) -> None:
        super().__init__()  # a private directory: the socket lives in it
        self.url = f"unix://{self.socket_path}?db=0"

    @property
    def socket_path(self) -> Path:
        return self.dir / "redis.sock"

    def start(self) -> None:
        listen = ["--port", "0", "--unixsocket", str(self.socket_path)]
        self.proc = subprocess.Popen(_redis_command(self.dir, *listen), stdout=subprocess.DEVNULL)
        wait_for(self.ping, 15, f"redis-server on {self.socket_path}")

    def ping(self) -> bool:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1)
            s.connect(str(self.socket_path))
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")

    def client(self) -> Any:
        import redis

        return redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=5)


def worker_command(port: int, metrics_dir: Path | str, workers: int, extra_args: Iterable[str] = ()) -> list[str]:
    """``taskiq-monitor worker`` on the demo broker with ``workers`` worker processes."""
    return [
        sys.executable,
        "-m",
        "taskiq_monitor.cli",
        "worker",
        "taskiq_monitor.demo.tasks:broker",
        "--workers",
        str(workers),
        "--metrics-port",
        str(port),
        "--metrics-dir",
        str(metrics_dir),
        *extra_args,
    ]


def http_get(url: str, timeout: float = 5, headers: dict[str, str] | None = None) -> str:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read().decode()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse_metrics(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def total(samples: Samples, name: str, **match: str) -> float:
    return sum(
        v
        for (n, labels), v in samples.items()
        if n == name and all(dict(labels).get(k) == val for k, val in match.items())
    )


class Worker:
    """`taskiq-monitor worker taskiq_monitor.demo.tasks:broker` with real worker processes."""

    def __init__(
        self,
        redis_url: str,
        workdir: Path,
        *,
        kind: str = "list",
        queue: str,
        workers: int = 2,
        extra_args: Iterable[str] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.metrics_dir = workdir / f"metrics-{self.port}"
        self.env = dict(
            os.environ,
            PYTHONPATH=PYTHONPATH,
            TASKIQ_MONITOR_DEMO_BROKER_URL=redis_url,
            TASKIQ_MONITOR_DEMO_BROKER_KIND=kind,
            TASKIQ_MONITOR_DEMO_QUEUE_NAME=queue,
            **(env or {}),
        )
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.log = open(workdir / f"worker-{self.port}.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            worker_command(self.port, self.metrics_dir, workers, extra_args),
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # so that stop() can end taskiq's processes too
        )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(lambda: http_get(self.url + "/healthz"), 30, "the worker's exporter")
        # Ready means every child has started up and exported its registered tasks (zero values).
        wait_for(
            lambda: len(self.child_pids()) == workers and set(self.child_pids()) <= live_gauge_pids(self.metrics_dir),
            30,
            f"{workers} worker children started",
        )

    def scrape(self) -> Samples:
        return parse_metrics(http_get(self.url + "/metrics"))

    def child_pids(self) -> list[int]:
        """PIDs of taskiq's worker children (grandchildren of this process)."""
        taskiq_main = children(self.proc.pid)
        return [pid for main in taskiq_main for pid in children(main)]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        code = stop(self.proc, sig, timeout=timeout, group=True)
        self.log.close()
        return code


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


def produce(
    redis_url: str,
    plan: list[tuple[str, list[Any], dict[str, Any]]],
    *,
    kind: str,
    queue: str,
    metrics_dir: Path | None = None,
) -> None:
    """Enqueue ``plan`` from a separate producer process, as a web app would (real ``.kiq()``)."""
    env = dict(
        os.environ,
        PYTHONPATH=PYTHONPATH,
        TASKIQ_MONITOR_DEMO_BROKER_URL=redis_url,
        TASKIQ_MONITOR_DEMO_BROKER_KIND=kind,
        TASKIQ_MONITOR_DEMO_QUEUE_NAME=queue,
    )
    if metrics_dir is not None:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    code = (
        "import asyncio, json, sys\n"
        "from taskiq_monitor.demo.tasks import broker\n"
        "async def main():\n"
        "    await broker.startup()\n"
        "    for name, args, kwargs in json.load(sys.stdin):\n"
        "        await broker.find_task(name).kiq(*args, **kwargs)\n"
        "    await broker.shutdown()\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", code], input=json.dumps(plan), text=True, env=env, check=True, timeout=120)


class Prometheus:
    def __init__(
        self,
        workdir: Path,
        targets: list[str],
        *,
        scrape_interval: str = "1s",
        extra_config: str = "",
        rule_files: Iterable[Path] = (),
    ) -> None:
        self.port = free_port()
        self.workdir = workdir / f"prometheus-{self.port}"
        self.workdir.mkdir()
        rules = "".join(f"\n  - {p}" for p in rule_files)
        config = (
            f"global:\n  scrape_interval: {scrape_interval}\n  evaluation_interval: {scrape_interval}\n"
            + (f"rule_files:{rules}\n" if rules else "")
            + "scrape_configs:\n  - job_name: taskiq\n    static_configs:\n      - targets: "
            + json.dumps(targets)
            + "\n"
            + extra_config
        )
        (self.workdir / "prometheus.yml").write_text(config)
        self.log = open(self.workdir / "prometheus.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                require_binary("prometheus"),
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--enable-feature=exemplar-storage",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for(lambda: "Ready" in http_get(self.url + "/-/ready"), 60, "prometheus ready")

    def query(self, expr: str) -> list[dict[str, Any]]:
        body = json.loads(http_get(self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def stop(self) -> None:
        stop(self.proc)
        self.log.close()
