"""What the exporter needs from the server below the ASGI line.

* ``TCP_NODELAY`` on every accepted connection. The exporter binds its own socket (so a busy port is a clear
  error before anything is wiped) and hands it to uvicorn. ``socket.create_server`` leaves ``proto`` at 0, and
  asyncio sets ``TCP_NODELAY`` only on sockets whose ``proto`` is ``IPPROTO_TCP``: every second request on a
  kept-alive connection then waited 44 ms for the peer's delayed ACK (Nagle). :func:`listening_socket` creates
  the socket with ``IPPROTO_TCP`` and sets the option on the listener as well (Linux copies it to accepted sockets).
* A WebSocket connection the feed can abort: a client that stopped reading has megabytes queued in the kernel
  ahead of its close frame, and uvicorn's ``transport.close()`` waits for them forever. The protocol class of
  :func:`uvicorn_options` offers ``transport.abort`` to the app through the ASGI scope extension
  ``taskiq_monitor.connection``.
* Frames written once for many clients: a server's data frame is not masked, so the bytes of one batch frame are
  the same for every client of a filter group. ASGI ``websocket.send`` would encode the text, frame it and join
  the output again per client (three copies of tens of KiB per client and tick); the same extension offers
  ``write(frame_bytes)``, which waits for the transport to be writable (uvicorn's own flow control) and writes the
  prepared frame as is. :func:`text_frame` builds it. ``write_now(frames)`` writes without waiting, or returns
  False when the transport is paused (above its high-water mark) or closing: the broadcaster then writes an idle
  client's batch in its own loop, instead of waking that client's task (see ``service/broadcast.py``).
* No per-message deflate: compressing every frame once per client was the feed's main cost (50–330 µs per frame
  and client, see ``docs/benchmarks.md``).
* Tokens never reach a log line: uvicorn logs WebSocket handshakes and (when enabled) requests with their query
  string, and older clients pass ``?token=``. :func:`install_log_redaction` masks it in uvicorn's records.
"""

from __future__ import annotations

import logging
import re
import socket
from typing import Any

from starlette.websockets import WebSocketDisconnected

CONNECTION_EXTENSION = "taskiq_monitor.connection"
_TOKEN_RE = re.compile(r"((?:[?&]|%3[Ff]|%26)(?:token|access_token)(?:=|%3[Dd]))[^&\s\"']*", re.IGNORECASE)
REDACTED = "[redacted]"


def listening_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket whose accepted connections have ``TCP_NODELAY`` (raises ``OSError``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    return sock


def websocket_protocol() -> type[Any]:
    """uvicorn's WebSocket protocol, plus the abort extension in the scope of each connection."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    class AbortableWebSocketProtocol(WebSocketsSansIOProtocol):
        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            scope = getattr(self, "scope", None)
            if scope is not None:  # the app task starts after this returns: it sees the extension
                scope["extensions"][CONNECTION_EXTENSION] = {
                    "abort": self.transport.abort,
                    "write": self.write_frame,
                    "write_now": self.write_now,
                }

        async def write_frame(self, frame: bytes) -> None:
            await self.writable.wait()
            if self.disconnected or self.close_sent or self.transport.is_closing():
                raise WebSocketDisconnected("the connection is closed")
            self.transport.write(frame)

        def write_now(self, frames: list[bytes]) -> bool:
            # Written at once only while the transport takes data (below its high-water mark); otherwise the
            # caller queues them and the connection's sender waits for writable, as uvicorn's own sends do.
            if not self.writable.is_set() or self.disconnected or self.close_sent or self.transport.is_closing():
                return False
            for frame in frames:
                self.transport.write(frame)
            return True

    return AbortableWebSocketProtocol


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented WebSocket text frame (RFC 6455 §5.2), as a server sends it."""
    size = len(payload)
    if size < 126:
        header = bytes((0x81, size))
    elif size < 1 << 16:
        header = bytes((0x81, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((0x81, 127)) + size.to_bytes(8, "big")
    return header + payload


def uvicorn_options() -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` of the exporter."""
    return {"ws": websocket_protocol(), "ws_per_message_deflate": False}


def redact_tokens(text: str) -> str:
    return _TOKEN_RE.sub(lambda m: m.group(1) + REDACTED, text)


class TokenRedactingFilter(logging.Filter):
    """Masks ``token=`` query parameters in a record's message and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact_tokens(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact_tokens(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact_tokens(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def install_log_redaction() -> None:
    """Add :class:`TokenRedactingFilter` to uvicorn's loggers (once)."""
    for name in ("uvicorn.error", "uvicorn.access", "uvicorn"):
        target = logging.getLogger(name)
        if not any(isinstance(f, TokenRedactingFilter) for f in target.filters):
            target.addFilter(TokenRedactingFilter())
