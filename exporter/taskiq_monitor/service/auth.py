"""The one place the bearer token is checked: the HTTP dependency, the WebSocket and the dashboard's session cookie.

The session cookie never holds the token itself, only an HMAC of a fixed label keyed by it: a leaked cookie does
not reveal the token, and changing the token invalidates every session.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from taskiq_monitor.settings import Settings

SESSION_COOKIE = "taskiq_monitor_session"


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"taskiq-monitor-session-v1", hashlib.sha256).hexdigest()


def is_authorized(settings: Settings, authorization_header: str | None, cookies: Mapping[str, str]) -> bool:
    """True when no token is configured, or the request carries ``Authorization: Bearer <token>`` or the session
    cookie set by ``POST /api/v1/session``."""
    if settings.bearer_token is None:
        return True
    token = settings.bearer_token.get_secret_value()
    scheme, _, value = (authorization_header or "").partition(" ")
    if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode()):
        return True
    cookie = cookies.get(SESSION_COOKIE)
    return cookie is not None and hmac.compare_digest(cookie.encode(), session_value(token).encode())
