"""The one error shape of the exporter's HTTP routes: ``{"detail": {"error": <code>, "message": <one line>}}``.

Every error a client gets — the API's own (unknown filter value, malformed cursor), FastAPI's validation (a limit
out of range, a body that is not JSON), the token check (401), an unknown path or method (Starlette's 404/405) and
a state store outage (503) — has this shape, so a client reads ``detail.error`` / ``detail.message`` whatever went
wrong (README, "API errors"). Messages never carry a client's value in full (:func:`taskiq_monitor.service.query.shown`
caps it): a 5,000-character cursor is not sent back.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from taskiq_monitor.service.query import validation_message

# The code of an error raised with a plain message (FastAPI's, Starlette's, the token check's), by status.
STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    422: "invalid_parameter",
    503: "unavailable",
}


class ApiError(BaseModel):
    error: str = Field(description="A stable code: unknown_status, malformed_cursor, invalid_parameter, ...")
    message: str = Field(description="One line for a human; a value sent by the client is shortened.")


class ErrorResponse(BaseModel):
    detail: ApiError


def bad_input(description: str) -> dict[int | str, dict[str, Any]]:
    """The documented 422 of a route (``responses=``): FastAPI's own would document its list of errors."""
    return {422: {"model": ErrorResponse, "description": description}}


def api_error(code: str, message: str, http: int = 422, headers: dict[str, str] | None = None) -> HTTPException:
    return HTTPException(http, {"error": code, "message": message}, headers=headers)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"detail": {"error": code, "message": message}}


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, StarletteHTTPException):  # registered for this class only
        raise exc
    headers = getattr(exc, "headers", None)
    if exc.status_code in (204, 304) or exc.status_code < 400:  # no body allowed (Starlette's own rule)
        return Response(status_code=exc.status_code, headers=headers)
    detail: Any = exc.detail
    if not (isinstance(detail, dict) and isinstance(detail.get("error"), str)):
        # A plain message (Starlette's "Not Found", the token check's): the code is the status's.
        code = STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        detail = {"error": code, "message": detail if isinstance(detail, str) else str(detail)}
    return JSONResponse({"detail": detail}, exc.status_code, headers=headers)


async def _invalid_request(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, RequestValidationError):  # registered for this class only
        raise exc
    # Never FastAPI's list: it holds each value sent ("input"), a token in a login body or a 5,000-character cursor.
    return JSONResponse(error_body("invalid_parameter", validation_message(exc)), 422)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app``'s routes in the one documented shape."""
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
