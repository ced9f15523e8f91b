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
* No per-message deflate by default: compressing every frame once per client was the feed's main cost (50–330 µs
  per frame and client, see ``docs/benchmarks.md``). With ``live_compression`` it is negotiated without server
  context takeover, so that a batch compressed once (:func:`deflated_text_frame`) is valid for every client; the
  ``deflate`` entry of the extension says whether this connection negotiated it.
* Tokens never reach a log line: uvicorn logs WebSocket handshakes and (when enabled) requests with their query
  string, and older clients pass ``?token=``. :func:`install_log_redaction` masks it in uvicorn's records.
"""

from __future__ import annotations

import logging
import re
import socket
import zlib
from typing import Any

from starlette.websockets import WebSocketDisconnected

CONNECTION_EXTENSION = "taskiq_monitor.connection"
# As uvicorn's own deflate settings: a 4 KiB window and small zlib state, as every message is compressed afresh.
DEFLATE_WINDOW_BITS = 12
DEFLATE_MEM_LEVEL = 5
_EMPTY_BLOCK = b"\x00\x00\xff\xff"  # a sync flush ends with it; permessage-deflate drops it
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


def websocket_protocol(compress: bool = False) -> type[Any]:
    """uvicorn's WebSocket protocol, plus the abort extension in the scope of each connection; with ``compress``,
    per-message deflate without server context takeover for the clients that offer it."""
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    from websockets.extensions.permessage_deflate import PerMessageDeflate, ServerPerMessageDeflateFactory
    from websockets.server import ServerProtocol

    class AbortableWebSocketProtocol(WebSocketsSansIOProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            if compress:
                # Every server message compressed on its own (no context takeover): a batch compressed once can
                # then go to many clients, between the messages the library compresses itself.
                factory = ServerPerMessageDeflateFactory(
                    server_no_context_takeover=True,
                    server_max_window_bits=DEFLATE_WINDOW_BITS,
                    client_max_window_bits=DEFLATE_WINDOW_BITS,
                    compress_settings={"memLevel": DEFLATE_MEM_LEVEL},
                )
                self.conn = ServerProtocol(extensions=[factory], max_size=self.config.ws_max_size, logger=self.logger)

        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            scope = getattr(self, "scope", None)
            if scope is not None:  # the app task starts after this returns: it sees the extension
                scope["extensions"][CONNECTION_EXTENSION] = {
                    "abort": self.transport.abort,
                    "write": self.write_frame,
                    "write_now": self.write_now,
                    "deflate": self.deflate_negotiated,
                }

        def deflate_negotiated(self) -> bool:
            # Known once the handshake is answered (the app's accept).
            return any(isinstance(ext, PerMessageDeflate) for ext in self.conn.extensions)

        async def write_frame(self, frame: bytes) -> None:
            await self.writable.wait()
            if self.disconnected or self.close_sent or self.transport.is_closing():
                raise WebSocketDisconnected("the connection is closed")
            self.transport.write(frame)

        def write_now(self, frames: bytes) -> bool:
            # Written at once only while the transport takes data (below its high-water mark); otherwise the
            # caller queues them and the connection's sender waits for writable, as uvicorn's own sends do.
            if not self.writable.is_set() or self.disconnected or self.close_sent or self.transport.is_closing():
                return False
            self.transport.write(frames)
            return True

    return AbortableWebSocketProtocol


def text_frame(payload: bytes, rsv1: bool = False) -> bytes:
    """One unmasked, unfragmented WebSocket text frame (RFC 6455 §5.2), as a server sends it; ``rsv1`` marks a
    compressed one."""
    first = 0xC1 if rsv1 else 0x81
    size = len(payload)
    if size < 126:
        header = bytes((first, size))
    elif size < 1 << 16:
        header = bytes((first, 126)) + size.to_bytes(2, "big")
    else:
        header = bytes((first, 127)) + size.to_bytes(8, "big")
    return header + payload


def deflated_text_frame(payload: bytes) -> bytes:
    """One text frame compressed as permessage-deflate without context takeover (RFC 7692 §7.2.1): readable by
    every client that negotiated it with :func:`websocket_protocol`, whatever it received before."""
    encoder = zlib.compressobj(wbits=-DEFLATE_WINDOW_BITS, memLevel=DEFLATE_MEM_LEVEL)
    data = encoder.compress(payload) + encoder.flush(zlib.Z_SYNC_FLUSH)
    return text_frame(data[:-4] if data.endswith(_EMPTY_BLOCK) else data, rsv1=True)


def uvicorn_options(compress: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.Config`` of the exporter."""
    return {"ws": websocket_protocol(compress), "ws_per_message_deflate": False}


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
