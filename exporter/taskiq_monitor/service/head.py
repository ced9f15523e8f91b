"""``HEAD`` of every ``GET`` route: answered as the ``GET``, without its body.

Every general-purpose HTTP server supports ``HEAD`` (RFC 9110 §9.3.2), and uptime checkers, load balancers and
``curl -I`` use it on ``/healthz`` and ``/metrics``; FastAPI's routes answer only the methods they declare, so each
got 405. The ``GET`` runs in full — the token check, the ``Host`` check and its status included — and only the body
is dropped; its headers (``Content-Length`` too) are those the ``GET`` would send.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class HeadAsGet:
    """ASGI middleware: a ``HEAD`` request is passed on as ``GET`` and its response body is not sent."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)
