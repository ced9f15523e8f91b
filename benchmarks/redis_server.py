"""A throw-away redis-server for the benchmarks: a free loopback port, no persistence; stop it by its Popen."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time


def start_redis() -> tuple[subprocess.Popen[bytes], str] | None:
    """``(server, url)`` once it answers PING, or None without the binary (or when it did not start)."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        cwd=tempfile.gettempdir(),
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    for _ in range(200):
        try:
            redis.Redis.from_url(url).ping()
            return server, url
        except redis.ConnectionError:
            time.sleep(0.05)
    server.kill()
    return None
