"""The exporter's HTTP service: ``/metrics`` for all worker processes of a host, and ``/healthz``.

``create_app`` is small on purpose: it wires settings, the metrics source and the routers; the live feed and
REST API routers are included from their own modules.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Iterable
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import Response
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from taskiq_monitor.multiproc import CombinedSource, MultiProcessSource, live_gauge_pids
from taskiq_monitor.settings import Settings


def metrics_source(settings: Settings, extra: Iterable[Collector] = ()) -> CombinedSource:
    """What ``/metrics`` exposes: the merged multiprocess files when a directory is configured, else this
    process's default registry (the demo, or an app that enqueues from a single process)."""
    from prometheus_client import REGISTRY

    base: Collector = MultiProcessSource(settings.metrics_dir) if settings.metrics_dir else REGISTRY
    return CombinedSource([base, *extra])


def bearer_auth(settings: Settings) -> Any:
    """A dependency that enforces ``Authorization: Bearer <token>`` when a token is configured."""
    expected = settings.bearer_token.get_secret_value().encode() if settings.bearer_token else None

    def check(request: Request) -> None:
        if expected is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), expected):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="missing or invalid bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return check


def _both(first: Any, second: Any) -> Any:
    """Two lifespans as one (entered in order, left in reverse)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with first(app), second(app):
            yield

    return lifespan


def create_app(settings: Settings | None = None, extra_collectors: Iterable[Collector] = ()) -> FastAPI:
    settings = settings if settings is not None else Settings()
    auth = Depends(bearer_auth(settings))
    # Queue state + live feed: when Redis is configured, or this process holds the in-process store (the demo).
    from taskiq_monitor.service.history import include_history
    from taskiq_monitor.service.live import LiveFeed, include_live
    from taskiq_monitor.store import open_store

    store = open_store(settings)
    feed: LiveFeed | None = None
    app = FastAPI(
        title="taskiq-monitor exporter",
        version="0.1.0",
        description="Prometheus metrics of all TaskIQ worker processes of a host, queue state and a live feed.",
    )
    if store is not None:
        feed = include_live(app, settings, auth, store)
        history = include_history(app, settings, auth, store)
        app.router.lifespan_context = _both(feed.lifespan, history.lifespan)
        extra_collectors = [*extra_collectors, feed.collector, history.collector]
    source = metrics_source(settings, extra_collectors)
    app.state.settings = settings
    app.state.live = feed

    @app.get("/metrics", dependencies=[auth], response_class=Response, summary="Prometheus/OpenMetrics exposition")
    def metrics(request: Request) -> Response:
        # Sync on purpose: FastAPI runs it in a thread, so merging many files never blocks the event loop.
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(source), media_type=content_type)

    @app.get("/healthz", summary="Liveness of the exporter")
    def healthz() -> dict[str, Any]:
        body: dict[str, Any] = {"status": "ok"}
        if settings.metrics_dir is not None:
            body["metrics_dir"] = str(settings.metrics_dir)
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
        logging.getLogger("taskiq_monitor").warning(
            "metrics directory %s is configured, but prometheus_client runs in single-process mode in this process "
            "(PROMETHEUS_MULTIPROC_DIR must be set before prometheus_client is imported); serving this process's "
            "registry",
            settings.metrics_dir,
        )
    source: Any = MultiProcessSource(directory) if directory is not None else REGISTRY
    return make_asgi_app(registry=source)
