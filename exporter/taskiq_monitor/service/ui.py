"""The built-in web dashboard: the page at ``/``, its static assets, the session login and the security headers.

The page is plain ES modules shipped inside the package (``service/static``): no build step, nothing from a CDN.
It reads the same API as everyone else (``/api/v1/tasks``, ``/api/v1/executions`` or ``/api/v1/events``,
``/ws/events``). With a bearer token configured, ``POST /api/v1/session`` exchanges the token for an HttpOnly,
SameSite=Strict cookie (``auth.session_value``), so the token never lands in a URL or in ``localStorage``.
Test hooks and the health rule are a public contract: docs/ui.md.
"""

from __future__ import annotations

import mimetypes
from functools import cache
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Request, status
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from taskiq_monitor.mixin.config import CONFIG
from taskiq_monitor.service.auth import SESSION_COOKIE, is_authorized, session_value
from taskiq_monitor.service.errors import ErrorResponse, bad_input
from taskiq_monitor.settings import Settings

# No inline script or style anywhere: the page's own files only; WebSocket and fetch to this origin only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}

# The health colour's inputs, from the one config the dashboards and alert rules are built from (docs/ui.md).
THRESHOLD_NAMES = (
    "success_ratio_warning",
    "success_ratio_ok",
    "backlog_min_pending",
    "backlog_critical_pending",
    "oldest_pending_warning_seconds",
    "oldest_pending_max_age_seconds",
    "failure_ratio_threshold",
    "failure_min_volume",
)


def thresholds() -> dict[str, float]:
    """The health thresholds of ``taskiq_monitor.mixin.config.CONFIG``, for the cards' colour."""
    return {name: float(getattr(CONFIG, name)) for name in THRESHOLD_NAMES}


class SessionRequest(BaseModel):
    token: str


class UiConfig(BaseModel):
    auth_required: bool
    grafana_url: str | None
    loki_datasource_uid: str
    tempo_datasource_uid: str
    service_name: str
    stats_window_seconds: int
    thresholds: dict[str, float]


def _static_root() -> Any:
    return resources.files("taskiq_monitor.service").joinpath("static")


@cache
def _asset(path: str) -> tuple[bytes, str] | None:
    parts = path.split("/")
    if not path or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    node = _static_root()
    for part in parts:
        node = node.joinpath(part)
    if not node.is_file():
        return None
    suffix = "." + path.rsplit(".", 1)[-1] if "." in path else ""
    media = _TYPES.get(suffix) or mimetypes.guess_type(path)[0] or "application/octet-stream"
    return node.read_bytes(), media


def secured(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def include_ui(app: FastAPI, settings: Settings) -> None:
    """Mount the dashboard (``/``, ``/static/…``) and the session endpoints on ``app``."""

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        found = _asset("index.html")
        if found is None:  # a broken install, not a request error
            raise RuntimeError("index.html is missing from the package data")
        response = Response(found[0], media_type="text/html; charset=utf-8")
        response.headers["Cache-Control"] = "no-cache"
        return secured(response)

    @app.get("/static/{path:path}", include_in_schema=False)
    def static(path: str) -> Response:
        found = _asset(path)
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no such asset")
        response = Response(found[0], media_type=found[1])
        # Revalidated on every load: the files are small, and a new version must never mix with a cached one.
        response.headers["Cache-Control"] = "no-cache"
        return secured(response)

    @app.get("/api/v1/ui/config", response_model=UiConfig, tags=["dashboard"], summary="Settings the dashboard needs")
    def ui_config(request: Request) -> UiConfig:
        if not is_authorized(settings, request.headers.get("authorization"), request.cookies):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "missing or invalid bearer token")
        return UiConfig(
            auth_required=settings.bearer_token is not None,
            grafana_url=settings.grafana_url.rstrip("/") if settings.grafana_url else None,
            loki_datasource_uid=CONFIG.loki_datasource_uid,
            tempo_datasource_uid=CONFIG.tempo_datasource_uid,
            service_name=settings.service_name,
            stats_window_seconds=settings.stats_window_seconds,
            thresholds=thresholds(),
        )

    @app.post(
        "/api/v1/session",
        status_code=status.HTTP_204_NO_CONTENT,
        tags=["dashboard"],
        summary="Log in to the dashboard: exchange the bearer token for an HttpOnly session cookie",
        responses={
            401: {"model": ErrorResponse, "description": "Wrong token (code invalid_token)."},
            **bad_input("The body is not JSON, or not an object with a string token."),
        },
    )
    def login(body: SessionRequest, request: Request) -> Response:
        token = settings.bearer_token.get_secret_value() if settings.bearer_token else None
        if token is not None and not is_authorized(settings, f"Bearer {body.token}", {}):
            return JSONResponse(
                {"detail": {"error": "invalid_token", "message": "wrong token"}}, status.HTTP_401_UNAUTHORIZED
            )
        response = Response(status_code=status.HTTP_204_NO_CONTENT)
        if token is not None:
            response.set_cookie(
                SESSION_COOKIE,
                session_value(token),
                httponly=True,
                samesite="strict",
                path="/",
                secure=request.url.scheme == "https",
            )
        return response

    @app.delete(
        "/api/v1/session",
        status_code=status.HTTP_204_NO_CONTENT,
        tags=["dashboard"],
        summary="Log out of the dashboard (clears the session cookie)",
    )
    def logout(request: Request) -> Response:
        response = Response(status_code=status.HTTP_204_NO_CONTENT)
        response.delete_cookie(
            SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
        )
        return response
