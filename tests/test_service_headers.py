"""Default security headers: the API's answers (parameters, tracebacks) are never cached nor sniffed as HTML."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from taskiq_monitor.service.app import create_app
from taskiq_monitor.service.ui import CONTENT_SECURITY_POLICY
from taskiq_monitor.settings import Settings

TOKEN = "t0ken-for-header-tests"


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost")


def assert_api_headers(response: httpx.Response) -> None:
    assert response.headers["x-content-type-options"] == "nosniff", response.request.url
    assert response.headers["cache-control"] == "no-store", response.request.url
    assert response.headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"


async def test_api_responses_are_no_store_and_nosniff_errors_too() -> None:
    async with client(create_app(Settings(bearer_token=TOKEN))) as http:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        responses = [
            await http.get("/api/v1/ui/config", headers=auth),
            await http.get("/api/v1/ui/config"),  # 401
            await http.post("/api/v1/session", json={"token": "wrong"}),  # 401 of the login
            await http.get("/api/v1/no-such-thing", headers=auth),  # 404
            await http.get("/openapi.json", headers=auth),
            await http.get("/metrics", headers=auth),
        ]
    assert [r.status_code for r in responses] == [200, 401, 401, 404, 200, 200]
    for response in responses:
        assert_api_headers(response)


async def test_the_host_checks_refusal_carries_the_headers_too() -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(Settings())), base_url="http://127.0.0.1:9808"
    ) as http:
        refused = await http.get("/api/v1/ui/config", headers={"Host": "rebind.example"})
    assert refused.status_code == 400
    assert_api_headers(refused)


async def test_the_dashboard_keeps_its_own_cache_and_csp_headers() -> None:
    async with client(create_app(Settings())) as http:
        for path in ("/", "/static/app.css"):
            response = await http.get(path)
            assert response.headers["cache-control"] == "no-cache", path
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
            assert response.headers.get_list("content-security-policy") == [CONTENT_SECURITY_POLICY], path
