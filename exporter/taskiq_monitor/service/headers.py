"""Security headers on every HTTP response of the exporter that does not set its own.

The API's answers carry task parameters and tracebacks: ``Cache-Control: no-store`` keeps them out of browser and
proxy caches, ``X-Content-Type-Options: nosniff`` stops a browser from sniffing a JSON body (a traceback quoting
``<script>``) as HTML, and ``Content-Security-Policy: default-src 'none'; frame-ancestors 'none'`` makes a
response opened as a page inert and unframeable. The dashboard's own page and assets set stricter or different
values themselves (``service/ui.py``: its CSP, ``Cache-Control: no-cache``); a header a route sets is never
replaced.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

DEFAULT_HEADERS: dict[bytes, bytes] = {
    b"x-content-type-options": b"nosniff",
    b"cache-control": b"no-store",
    b"content-security-policy": b"default-src 'none'; frame-ancestors 'none'",
}

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class DefaultSecurityHeaders:
    """ASGI middleware adding :data:`DEFAULT_HEADERS` to HTTP responses that lack them (pure ASGI, so streamed
    bodies pass through untouched)."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {bytes(key).lower() for key, _ in headers}
                headers += [(key, value) for key, value in DEFAULT_HEADERS.items() if key not in present]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
