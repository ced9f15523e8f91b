"""The one token check: bearer header or session cookie, for the API, /metrics and the API schema."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from fastapi.testclient import TestClient

from taskiq_monitor.service.app import create_app
from taskiq_monitor.service.auth import SESSION_COOKIE, is_authorized, session_value
from taskiq_monitor.settings import Settings

# Swagger UI and ReDoc load their scripts from a CDN, on the origin of the session cookie: removed.
CDN_PAGES = ["/docs", "/redoc", "/docs/oauth2-redirect"]


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


def test_is_authorized_refuses_a_lone_surrogate_in_the_header_or_the_cookie() -> None:
    locked = Settings(bearer_token="s3cret")
    assert not is_authorized(locked, "Bearer \ud800", {})
    assert not is_authorized(locked, None, {SESSION_COOKIE: "\ud800"})
    assert not is_authorized(locked, "Bearer s3cret\udcff", {SESSION_COOKIE: session_value("s3cret") + "\ud800"})


def test_post_session_with_a_lone_surrogate_is_401_not_500() -> None:
    # JSON may escape a lone surrogate; encoding it for the comparison raised UnicodeEncodeError (a 500).
    with TestClient(create_app(Settings(bearer_token="s3cret")), raise_server_exceptions=False) as client:
        response = client.post(
            "/api/v1/session", content=b'{"token": "\\ud800"}', headers={"content-type": "application/json"}
        )
    assert response.status_code == 401, response.text
    assert response.json()["detail"]["error"] == "invalid_token"
    assert SESSION_COOKIE not in response.cookies


def test_get_openapi_json_requires_the_token_when_configured() -> None:
    with TestClient(create_app(Settings(bearer_token="s3cret"))) as client:
        denied = client.get("/openapi.json")
        assert denied.status_code == 401 and denied.headers["www-authenticate"] == "Bearer"
        assert "paths" not in denied.text
        assert client.get("/openapi.json", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        client.cookies.set(SESSION_COOKIE, session_value("s3cret"))
        assert "/metrics" in client.get("/openapi.json").json()["paths"]


def test_get_openapi_json_open_without_a_token() -> None:
    with TestClient(create_app(Settings())) as client:
        response = client.get("/openapi.json")
    assert response.status_code == 200
    assert "/metrics" in response.json()["paths"]


@pytest.mark.parametrize("path", CDN_PAGES)
def test_get_swagger_ui_and_redoc_pages_are_gone(path: str) -> None:
    with TestClient(create_app(Settings(bearer_token="s3cret"))) as client:
        response = client.get(path, headers={"Authorization": "Bearer s3cret"})
    assert response.status_code == 404
    assert "cdn" not in response.text.lower()
