"""The one token check: bearer header or the dashboard's session cookie (an HMAC of the token, never the token)."""

from __future__ import annotations

from taskiq_monitor.service.auth import SESSION_COOKIE, is_authorized, session_value
from taskiq_monitor.settings import Settings

TOKEN = "t0ken-for-auth-tests"


def test_is_authorized_accepts_the_header_or_the_session_cookie_only() -> None:
    settings = Settings(bearer_token=TOKEN)
    assert is_authorized(settings, f"Bearer {TOKEN}", {})
    assert is_authorized(settings, None, {SESSION_COOKIE: session_value(TOKEN)})
    assert not is_authorized(settings, None, {SESSION_COOKIE: TOKEN})  # the cookie never holds the token
    assert not is_authorized(settings, "Bearer nope", {SESSION_COOKIE: session_value("nope")})
    assert not is_authorized(settings, None, {})
    assert is_authorized(Settings(), None, {})


def test_session_value_is_the_documented_hmac() -> None:
    import hashlib
    import hmac

    expected = hmac.new(TOKEN.encode(), b"taskiq-monitor-session-v1", hashlib.sha256).hexdigest()
    assert session_value(TOKEN) == expected and TOKEN not in expected
