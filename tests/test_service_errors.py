"""One error shape for every route of the exporter app: 401, 404, 405 and 422 of the dashboard's and FastAPI's own
routes, without the value sent (the routes over a state store: tests/integration/test_live_api.py)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from taskiq_monitor.service.app import create_app
from taskiq_monitor.settings import Settings

TOKEN = "t0ken-for-error-tests"
LONG = "S" * 5000


def assert_api_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The documented shape: ``{"detail": {"error": code, "message": one line}}``, the long value not sent back."""
    assert response.status_code == status, response.text[:300]
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"detail"} and set(body["detail"]) == {"error", "message"}, body
    detail: dict[str, Any] = body["detail"]
    assert detail["error"] == code, detail
    assert isinstance(detail["message"], str) and detail["message"] and "\n" not in detail["message"]
    assert "SSSS" not in response.text and len(response.text) < 300, response.text[:300]
    return detail


@pytest.fixture
async def http() -> Any:
    app = create_app(Settings(bearer_token=TOKEN))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://localhost") as client:
        yield client


async def test_a_missing_token_is_a_401_in_the_error_shape_with_its_challenge(http: httpx.AsyncClient) -> None:
    for path in ("/api/v1/ui/config", "/metrics", "/openapi.json"):
        detail = assert_api_error(await http.get(path), 401, "unauthorized")
        assert "bearer token" in detail["message"]
    assert (await http.get("/metrics")).headers["www-authenticate"] == "Bearer"


async def test_an_unknown_api_path_or_method_is_a_404_or_405_in_the_error_shape(http: httpx.AsyncClient) -> None:
    assert_api_error(await http.get("/api/v1/no-such-route"), 404, "not_found")
    assert_api_error(await http.get("/static/no-such-asset.js"), 404, "not_found")
    wrong_method = await http.post("/api/v1/ui/config", headers={"authorization": f"Bearer {TOKEN}"})
    assert_api_error(wrong_method, 405, "method_not_allowed")
    assert wrong_method.headers["allow"] == "GET"


@pytest.mark.parametrize(
    ("request_kwargs", "words"),
    [
        ({"content": b"{nope", "headers": {"content-type": "application/json"}}, "body: not valid JSON"),
        ({"content": b"", "headers": {"content-type": "application/json"}}, "body: Field required"),
        ({"json": [LONG]}, "body: Input should be a valid dictionary"),
        # A token sent as a list: FastAPI's list would send the token back ("input").
        ({"json": {"token": [LONG]}}, "token: Input should be a valid string"),
        ({"json": {"token": 5}}, "token: Input should be a valid string"),
    ],
)
async def test_a_malformed_login_body_is_a_422_in_the_error_shape_without_the_token(
    http: httpx.AsyncClient, request_kwargs: dict[str, Any], words: str
) -> None:
    detail = assert_api_error(await http.post("/api/v1/session", **request_kwargs), 422, "invalid_parameter")
    assert detail["message"] == words or detail["message"].startswith(words), detail


async def test_a_wrong_login_token_is_not_sent_back(http: httpx.AsyncClient) -> None:
    assert_api_error(await http.post("/api/v1/session", json={"token": LONG}), 401, "invalid_token")
