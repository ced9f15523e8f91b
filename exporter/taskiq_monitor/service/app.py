"""The exporter's HTTP service: ``/metrics`` for all worker processes of a host, and ``/healthz``.

``create_app`` is small on purpose: it wires settings, the metrics source and the routers; the live feed and
REST API routers are included from their own modules (``api``, ``feed``), the token check from ``auth``, the
``Host`` check from ``hosts`` and the default security headers from ``headers``. The API schema
(``/openapi.json``) is behind the same token as the API; there are no Swagger UI / ReDoc pages, which would load
their scripts from a CDN on the origin of the session cookie (the dashboard takes nothing from a CDN).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from taskiq_monitor.logs import WarnOnce, redis_target
from taskiq_monitor.multiproc import live_gauge_pids
from taskiq_monitor.service.auth import require_token
from taskiq_monitor.service.collectors import CombinedSource, MultiProcessSource
from taskiq_monitor.service.errors import install_error_handlers
from taskiq_monitor.service.head import HeadAsGet
from taskiq_monitor.service.headers import DefaultSecurityHeaders
from taskiq_monitor.service.hosts import HostCheck
from taskiq_monitor.service.transport import install_log_redaction
from taskiq_monitor.settings import Settings


def metrics_source(settings: Settings, extra: Iterable[Collector] = ()) -> CombinedSource:
    """What ``/metrics`` exposes: the merged multiprocess files when a directory is configured, else this
    process's default registry (the demo, or an app that enqueues from a single process)."""
    from prometheus_client import REGISTRY

    base: Collector = MultiProcessSource(settings.metrics_dir) if settings.metrics_dir else REGISTRY
    return CombinedSource([base, *extra])


def bearer_auth(settings: Settings) -> Any:
    """A dependency that enforces the bearer token (or the session cookie) when a token is configured."""
    return require_token(settings)


def _schema_route(app: FastAPI, auth: Any) -> None:
    """``/openapi.json``, behind the same token as the API (FastAPI's own is always open). In a browser, log in
    first (``POST /api/v1/session``): the session cookie then carries the token."""

    @app.get("/openapi.json", dependencies=[auth], include_in_schema=False)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())


def create_app(settings: Settings | None = None, extra_collectors: Iterable[Collector] = ()) -> FastAPI:
    settings = settings if settings is not None else Settings()
    auth = Depends(require_token(settings))
    # Queue state + live feed: when Redis is configured, or this process holds the in-process store (the demo).
    from taskiq_monitor.service import api
    from taskiq_monitor.service import feed as feed_module
    from taskiq_monitor.service.history import include_history
    from taskiq_monitor.service.state_collector import StateCollector
    from taskiq_monitor.store import open_store

    store = open_store(settings)
    feed: feed_module.LiveFeed | None = None
    app = FastAPI(
        title="taskiq-monitor exporter",
        version="0.1.0",
        description="Prometheus metrics of all TaskIQ worker processes of a host, queue state and a live feed.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    _schema_route(app, auth)
    install_error_handlers(app)  # one error shape for every route (README, "API errors")
    # Outermost last: the Host check's own 400 gets the default headers too.
    app.add_middleware(HeadAsGet)
    app.add_middleware(HostCheck, allowed=settings.allowed_hosts)
    app.add_middleware(DefaultSecurityHeaders)
    install_log_redaction()
    if store is not None:
        live = feed = feed_module.LiveFeed(settings, store)
        requests = api.requests_outage(settings)  # one report of an outage for every request handler
        app.include_router(api.router(settings, store, auth, requests))
        app.include_router(feed.router())
        app.description = (
            (app.description or "") + "\n\n" + (feed_module.__doc__ or "").split("WebSocket protocol", 1)[-1]
        )
        history = include_history(app, settings, auth, store, requests)
        extra_collectors = [
            *extra_collectors,
            StateCollector(store, feed.client_count, target=redis_target(settings.redis_url)),
            history.collector,
        ]
        relay = None
        if settings.exporter_ships_to_loki:
            from taskiq_monitor.service.loki_relay import LokiRelay

            relay = LokiRelay(settings)
            extra_collectors.append(relay.collector)
        app.state.loki_relay = relay

        @contextlib.asynccontextmanager
        async def lifespan(app: FastAPI) -> AsyncIterator[None]:
            live.ensure_broadcaster()
            if relay is not None:
                relay.start()
            try:
                async with history.lifespan(app):
                    yield
            finally:
                if relay is not None:
                    await asyncio.to_thread(relay.stop)
                await live.stop()
                await store.aclose()

        app.router.lifespan_context = lifespan
    source = metrics_source(settings, extra_collectors)
    app.state.settings = settings
    app.state.live = feed
    from taskiq_monitor.service.ui import include_ui

    include_ui(app, settings)

    warn = WarnOnce(logging.getLogger(__name__))

    def missing_directory() -> str | None:
        """Why the workers' metrics cannot be served: their directory is gone (removed while serving — their value
        files with it —, or not created yet by a starting ``worker``); None while it exists."""
        directory = settings.metrics_dir
        if directory is None or directory.is_dir():
            return None
        return f"metrics directory {directory} does not exist"

    @app.get("/metrics", dependencies=[auth], response_class=Response, summary="Prometheus/OpenMetrics exposition")
    def metrics(request: Request) -> Response:
        # Sync on purpose: FastAPI runs it in a thread, so merging many files never blocks the event loop.
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        try:
            if (missing := missing_directory()) is None:
                return Response(encoder(source), media_type=content_type)
        except FileNotFoundError:  # removed during the scrape
            if (missing := missing_directory()) is None:
                raise
        # A failed scrape, not a partial one: the worker metrics are lost, and Prometheus' `up` (TaskiqExporterDown)
        # must say so; one line, no traceback at every scrape.
        remedy = "the worker processes' metrics cannot be served; restart `taskiq-monitor worker` (or the workers)"
        warn("metrics_dir", "taskiq-monitor metrics: %s: %s", missing, remedy)
        return Response(f"{missing}: {remedy}\n", status_code=503, media_type="text/plain")

    @app.get("/healthz", summary="Liveness of the exporter")
    def healthz() -> Any:
        body: dict[str, Any] = {"status": "ok"}
        if settings.metrics_dir is not None:
            body["metrics_dir"] = str(settings.metrics_dir)
            missing = missing_directory()
            if missing is not None:
                # A failed liveness probe: a restart recreates the directory.
                body.update(status="error", error=missing)
                return JSONResponse(body, status_code=503)
            body["processes_reporting"] = len(live_gauge_pids(settings.metrics_dir))
        return body

    return app


def metrics_asgi_app(settings: Settings | None = None) -> Any:
    """An ASGI app serving ``/metrics`` for the side that enqueues (your FastAPI app)::

        app.mount("/metrics", taskiq_monitor.metrics_asgi_app())

    It exposes this process's registry, or the merged multiprocess directory when ``PROMETHEUS_MULTIPROC_DIR``
    (or ``TASKIQ_MONITOR_METRICS_DIR``) is set — e.g. an app run by gunicorn with several workers.
    """
    import logging

    from prometheus_client import REGISTRY, make_asgi_app

    from taskiq_monitor.multiproc import multiprocess_directory

    settings = settings if settings is not None else Settings()
    # What this process writes decides what it serves: a directory named in the settings but unknown to
    # prometheus_client (imported before the variable was set) would be served empty while the counts stay here.
    directory = multiprocess_directory()
    if directory is None and settings.metrics_dir is not None:
        logging.getLogger(__name__).warning(
            "metrics directory %s is configured, but prometheus_client runs in single-process mode in this process "
            "(PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client is imported); serving this process's "
            "registry",
            settings.metrics_dir,
        )
    source: Any = MultiProcessSource(directory) if directory is not None else REGISTRY
    return make_asgi_app(registry=source)
