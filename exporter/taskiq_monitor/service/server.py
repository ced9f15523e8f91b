"""Starting the exporter's HTTP server inside a running event loop (``worker``, ``serve``, the demo).

uvicorn runs without its own signal handling: the supervisor forwards SIGINT/SIGTERM to the worker command first
and stops the server after it. The port is bound before uvicorn starts, so a busy port is a one-line
:class:`~taskiq_monitor.errors.UsageError` instead of uvicorn's exit code 3.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from taskiq_monitor.errors import UsageError
from taskiq_monitor.service.transport import listening_socket, uvicorn_options

__all__ = ["start_server"]


def _server(app: Any, host: str, port: int, live_compression: bool) -> Any:
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan="on",
        access_log=False,
        **uvicorn_options(live_compression),
    )
    return _Server(config)


async def start_server(
    app: Any, host: str, port: int, live_compression: bool = False
) -> tuple[Any, asyncio.Task[None]]:
    """Bind first (a busy port is a user-facing error, not uvicorn's exit code 3), then serve in the background."""
    try:
        sock = listening_socket(host, port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    server = _server(app, host, port, live_compression)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
            raise UsageError(f"the server on {host}:{port} stopped during start-up")
        await asyncio.sleep(0.02)
    return server, task
