"""Keep-alive versus fresh-connection request latency of the exporter, with and without TCP_NODELAY.

Run::

    PYTHONPATH=exporter python benchmarks/bench_keepalive.py [--requests 200]

Serves ``create_app`` on uvicorn from a socket the exporter binds itself, two ways side by side in one process:

* ``listening_socket`` (what ``taskiq-monitor worker``/``serve`` use): ``IPPROTO_TCP`` + ``TCP_NODELAY``;
* ``socket.create_server`` (before the fix): asyncio leaves Nagle on for accepted connections of a socket whose
  ``proto`` is 0, and each kept-alive request after the first waits for the client's delayed ACK (~40 ms).

For each, ``GET /healthz`` and ``GET /metrics``: ``--requests`` on one kept-alive connection, and as many on fresh
connections; prints the median and p90 in milliseconds and the keep-alive / fresh ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import socket
import statistics
import time
from collections.abc import Callable

import uvicorn

from taskiq_monitor.service.app import create_app
from taskiq_monitor.service.transport import listening_socket, uvicorn_options
from taskiq_monitor.settings import Settings


def kept_alive(port: int, path: str, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", path)
    conn.getresponse().read()  # the first request opens the connection: not counted
    out: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        conn.request("GET", path)
        conn.getresponse().read()
        out.append((time.perf_counter() - start) * 1000)
    conn.close()
    return out


def fresh(port: int, path: str, n: int) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", path)
        conn.getresponse().read()
        conn.close()
        out.append((time.perf_counter() - start) * 1000)
    return out


async def measure(bind: Callable[[], socket.socket], n: int) -> dict[str, tuple[list[float], list[float]]]:
    sock = bind()
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(create_app(Settings()), log_level="warning", **uvicorn_options()))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:  # uvicorn offers no start event
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    try:
        return {
            path: (await asyncio.to_thread(kept_alive, port, path, n), await asyncio.to_thread(fresh, port, path, n))
            for path in ("/healthz", "/metrics")
        }
    finally:
        server.should_exit = True
        await task


def p90(values: list[float]) -> float:
    return sorted(values)[int(0.9 * (len(values) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    variants: dict[str, Callable[[], socket.socket]] = {
        "listening_socket (TCP_NODELAY)": lambda: listening_socket("127.0.0.1", 0),
        "socket.create_server (before)": lambda: socket.create_server(("127.0.0.1", 0)),
    }
    print("| socket | path | kept-alive median ms | p90 | fresh median ms | p90 | kept-alive / fresh |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, bind in variants.items():
        for path, (alive, new) in asyncio.run(measure(bind, args.requests)).items():
            ratio = statistics.median(alive) / statistics.median(new)
            print(
                f"| {name} | `{path}` | {statistics.median(alive):.2f} | {p90(alive):.2f} | "
                f"{statistics.median(new):.2f} | {p90(new):.2f} | {ratio:.2f}× |"
            )


if __name__ == "__main__":
    main()
