"""The one bearer-token check of the exporter, shared by HTTP routes and the WebSocket feed.

When ``TASKIQ_MONITOR_BEARER_TOKEN`` is unset everything is open (the exporter binds 127.0.0.1 by default). When it
is set, a request is authorized by either

* ``Authorization: Bearer <token>`` (Prometheus, scripts, ``taskiq-monitor tail``), or
* the session cookie ``taskiq_monitor_session`` set by ``POST /api/v1/session`` (the web dashboard: browsers can
  neither add headers to a WebSocket handshake nor should they keep the token in script-readable storage).

The cookie holds an HMAC of a fixed label keyed by the token (:func:`session_value`), never the token itself, so a
leaked cookie does not reveal the token, and changing the token invalidates every session. Every comparison is
constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping

from fastapi import HTTPException, Request, WebSocket, status

from taskiq_monitor.settings import Settings

SESSION_COOKIE = "taskiq_monitor_session"
_SESSION_LABEL = b"taskiq-monitor-session-v1"
UNAUTHORIZED_MESSAGE = "missing or invalid bearer token"


def session_value(token: str) -> str:
    """The session cookie's value for ``token``: ``HMAC-SHA256(token, "taskiq-monitor-session-v1")`` in hex."""
    return hmac.new(token.encode(), _SESSION_LABEL, hashlib.sha256).hexdigest()


def _utf8(text: str) -> bytes:
    # What a client sends may hold a lone surrogate (JSON allows "\ud800"): it must compare unequal, not raise.
    return text.encode("utf-8", "surrogatepass")


def is_authorized(settings: Settings, authorization_header: str | None, cookies: Mapping[str, str]) -> bool:
    """True when no token is configured, or the request carries the bearer token or a valid session cookie."""
    if settings.bearer_token is None:
        return True
    token = settings.bearer_token.get_secret_value()
    scheme, _, value = (authorization_header or "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(_utf8(value.strip()), token.encode()):
        return True
    cookie = cookies.get(SESSION_COOKIE)
    return cookie is not None and hmac.compare_digest(_utf8(cookie), session_value(token).encode())


def require_token(settings: Settings) -> Callable[[Request], None]:
    """A FastAPI dependency: 401 with ``WWW-Authenticate: Bearer`` unless :func:`is_authorized`."""

    def check(request: Request) -> None:
        if not is_authorized(settings, request.headers.get("authorization"), request.cookies):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, detail=UNAUTHORIZED_MESSAGE, headers={"WWW-Authenticate": "Bearer"}
            )

    return check


def websocket_authorized(settings: Settings, ws: WebSocket) -> bool:
    """The same check for a WebSocket handshake. ``?token=`` is still accepted in place of the header for older
    clients; prefer the header or the session cookie (a URL is easily logged — the exporter's own access log
    redacts it, proxies in front of it may not)."""
    header = ws.headers.get("authorization")
    query_token = ws.query_params.get("token")
    if header is None and query_token is not None:
        header = f"Bearer {query_token}"
    return is_authorized(settings, header, ws.cookies)
