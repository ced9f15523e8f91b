"""The one token check: bearer header or session cookie, for the API, /metrics and the API docs."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from fastapi.testclient import TestClient

from taskiq_monitor.service.app import create_app
from taskiq_monitor.service.auth import SESSION_COOKIE, is_authorized, session_value
from taskiq_monitor.settings import Settings

DOCS = ["/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"]


def test_session_value_is_an_hmac_of_the_label_never_the_token() -> None:
    expected = hmac.new(b"s3cret", b"taskiq-monitor-session-v1", hashlib.sha256).hexdigest()
    assert session_value("s3cret") == expected
    assert "s3cret" not in session_value("s3cret") and session_value("other") != expected


def test_is_authorized_accepts_the_header_or_the_cookie() -> None:
    open_ = Settings()
    assert is_authorized(open_, None, {})
    locked = Settings(bearer_token="s3cret")
    assert is_authorized(locked, "Bearer s3cret", {})
    assert is_authorized(locked, "bearer  s3cret ", {})
    assert is_authorized(locked, None, {SESSION_COOKIE: session_value("s3cret")})
    for header, cookies in [
        (None, {}),
        ("Bearer wrong", {}),
        ("Basic s3cret", {}),
        (None, {SESSION_COOKIE: "s3cret"}),  # the token itself is no session
        (None, {SESSION_COOKIE: session_value("wrong")}),
        (None, {"other": session_value("s3cret")}),
    ]:
        assert not is_authorized(locked, header, cookies), (header, cookies)


@pytest.mark.parametrize("path", DOCS)
def test_get_api_docs_requires_the_token_when_configured(path: str) -> None:
    with TestClient(create_app(Settings(bearer_token="s3cret"))) as client:
        denied = client.get(path)
        assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
        assert "paths" not in denied.text
        assert client.get(path, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        client.cookies.set(SESSION_COOKIE, session_value("s3cret"))
        assert client.get(path).status_code == 200


@pytest.mark.parametrize("path", DOCS)
def test_get_api_docs_open_without_a_token(path: str) -> None:
    with TestClient(create_app(Settings())) as client:
        response = client.get(path)
    assert response.status_code == 200
    if path == "/openapi.json":
        assert "/metrics" in response.json()["paths"]
