"""The dashboard's routes: page and assets with security headers, session login/logout, thresholds, package data."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from taskiq_monitor.service.app import create_app
from taskiq_monitor.service.auth import SESSION_COOKIE, session_value
from taskiq_monitor.service.ui import CONTENT_SECURITY_POLICY, thresholds
from taskiq_monitor.settings import Settings

ROOT = Path(__file__).parents[1]
STATIC = ROOT / "exporter" / "taskiq_monitor" / "service" / "static"
TOKEN = "t0ken-for-ui-tests"


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_the_page_and_its_assets_carry_a_strict_csp_and_nosniff() -> None:
    async with client(create_app(Settings())) as http:
        page = await http.get("/")
        script = await http.get("/static/js/main.js")
        style = await http.get("/static/app.css")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for response in (page, script, style):
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert script.headers["content-type"].startswith("text/javascript")
    assert style.headers["content-type"].startswith("text/css")


def test_the_page_has_no_inline_script_style_or_handler_and_no_remote_url() -> None:
    for path in STATIC.rglob("*"):
        if not path.is_file():
            continue
        text = path.read_text()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), f"{path}: remote URL (CDN?)"
        if path.suffix == ".html":
            assert re.findall(r"<script(?![^>]*\bsrc=)", text) == [], f"{path}: inline script"
            assert not re.search(r"\sstyle=|\son[a-z]+=", text), f"{path}: inline style or event handler"
            assert "<style" not in text
        if path.suffix == ".js":
            assert "innerHTML" not in text and "insertAdjacentHTML" not in text and "eval(" not in text, path
            assert "localStorage" not in text, f"{path}: the token must never be stored by the page"


async def test_assets_outside_the_static_directory_are_not_served() -> None:
    async with client(create_app(Settings())) as http:
        for path in ("/static/../ui.py", "/static/%2e%2e/ui.py", "/static/js/../../auth.py", "/static/.hidden"):
            assert (await http.get(path)).status_code == 404, path


async def test_login_sets_an_httponly_strict_cookie_that_authorises_the_api() -> None:
    settings = Settings(bearer_token=TOKEN)
    async with client(create_app(settings)) as http:
        assert (await http.get("/api/v1/ui/config")).status_code == 401
        assert (await http.get("/")).status_code == 200  # the page itself (the login form) is public
        wrong = await http.post("/api/v1/session", json={"token": "nope"})
        assert wrong.status_code == 401 and wrong.json()["detail"]["error"] == "invalid_token"
        assert SESSION_COOKIE not in wrong.headers.get("set-cookie", "")
        ok = await http.post("/api/v1/session", json={"token": TOKEN})
        assert ok.status_code == 204
        cookie = ok.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}={session_value(TOKEN)};")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert TOKEN not in cookie and "Secure" not in cookie  # plain http here
        config = (await http.get("/api/v1/ui/config")).json()
        assert config["auth_required"] is True and config["thresholds"] == thresholds()
        assert (await http.get("/metrics")).status_code == 200  # the cookie authorises the whole API
        out = await http.delete("/api/v1/session")
        assert out.status_code == 204 and "Max-Age=0" in out.headers["set-cookie"]
        http.cookies.clear()
        assert (await http.get("/metrics")).status_code == 401


async def test_the_cookie_is_secure_on_https() -> None:
    app = create_app(Settings(bearer_token=TOKEN))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://testserver") as http:
        response = await http.post("/api/v1/session", json={"token": TOKEN})
    assert "Secure" in response.headers["set-cookie"]


async def test_grafana_url_reaches_the_page_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKIQ_MONITOR_GRAFANA_URL", "http://grafana.example:3000/")
    async with client(create_app(Settings())) as http:
        config = (await http.get("/api/v1/ui/config")).json()
    assert config["grafana_url"] == "http://grafana.example:3000"
    assert config["thresholds"]["failure_ratio_threshold"] == pytest.approx(0.10)


def test_every_asset_is_declared_as_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "taskiq_monitor.service"
    ]
    base = STATIC.parent
    declared = {p for pattern in patterns for p in base.glob(pattern)}
    assets = {p for p in STATIC.rglob("*") if p.is_file()}
    assert assets and assets <= declared, sorted(str(p) for p in assets - declared)


def test_every_test_hook_of_the_page_is_documented_in_docs_ui() -> None:
    hooks: set[str] = set()
    for path in STATIC.rglob("*.*"):
        text = path.read_text()
        hooks |= set(re.findall(r'data-testid="([a-z-]+)"', text))
        hooks |= set(re.findall(r'"data-testid": "([a-z-]+)"', text))
    documented = set(re.findall(r'data-testid="([a-z-]+)"', (ROOT / "docs" / "ui.md").read_text()))
    assert {"task-card", "feed-row", "history-row", "error-detail", "live-status"} <= hooks
    assert hooks <= documented, sorted(hooks - documented)
