"""The execution history API (``/api/v1/executions``, ``/api/v1/tasks/series``), its metrics and its retention.

The records are written by ``StateSink`` with the state (see ``taskiq_monitor.store.history``). Use this API for
history ("every failed run of this type this week"); ``/api/v1/events`` and the WebSocket feed are the short resume
window of the live stream.

Retention runs here, in the background of every exporter: a bounded step (``EXPIRE_STEP`` executions) every
``_EXPIRE_INTERVAL`` seconds, at once again while there is more to delete; several exporters sharing a Redis just
share the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from pydantic import BaseModel, ConfigDict, Field

from taskiq_monitor.events import EVENT_STATUSES, bounded_task_id
from taskiq_monitor.logs import Outage, redis_target
from taskiq_monitor.service.api import UNAVAILABLE_RESPONSE, requests_outage, unavailable
from taskiq_monitor.service.errors import ErrorResponse, api_error, bad_input
from taskiq_monitor.service.query import FilterParams, InputError, filter_params, shown
from taskiq_monitor.service.scrape_budget import read
from taskiq_monitor.settings import Settings
from taskiq_monitor.store import StateStore
from taskiq_monitor.store.history import Execution, HistoryQuery, decode_cursor, encode_cursor, encode_member

logger = logging.getLogger(__name__)

MAX_PAGE = 50
EXECUTION_FILTERS = filter_params("first-recorded time")  # task_name, status, since, until
MAX_SERIES_MINUTES = 1440
# Task ids are the application's (taskiq's ``with_task_id``), recorded bounded (events.bounded_task_id): the API
# reads any id a request line of common proxies carries (nginx: 8 KiB), not only uuids, and bounds it alike, so the
# id the application knows finds its task.
MAX_TASK_ID_CHARS = 8192
_EXPIRE_INTERVAL = 10.0
_EXPIRE_PAUSE = 0.05  # between two steps of a long expiry: writers and readers get Redis in between


class Worker(BaseModel):
    host: str
    pid: int


class ExecutionSummary(BaseModel):
    task_id: str
    attempt: int
    task_name: str | None
    status: str = Field(description=f"One of {EVENT_STATUSES}: the latest state of this attempt.")
    enqueued_at: float | None = Field(description="Unix seconds (as all times here).")
    started_at: float | None
    finished_at: float | None
    duration_seconds: float | None
    queue_wait_seconds: float | None
    worker: Worker = Field(description="The process that recorded the latest state.")
    error_type: str | None
    error_message: str | None
    trace_id: str | None
    lost: bool = Field(
        False,
        description="True when status is pending or running but the state no longer holds this attempt: its worker "
        "stopped heartbeating (killed, crashed), its message expired from the queue state, or its final event was "
        "dropped. Its outcome is unknown; the record stays until retention removes it.",
    )


class ExecutionDetail(ExecutionSummary):
    model_config = ConfigDict(populate_by_name=True)

    args: list[Any]
    kwargs_: dict[str, Any] = Field(alias="kwargs")  # "kwargs" itself clashes with pydantic's generated __init__
    labels: dict[str, Any]
    traceback: str | None
    span_id: str | None


class ExecutionsPage(BaseModel):
    executions: list[ExecutionSummary] = Field(description="Newest first (by first recorded time).")
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null when there is none.")


class TaskAttempts(BaseModel):
    task_id: str
    attempts: list[ExecutionDetail] = Field(description="Ordered by attempt.")


class TaskSeries(BaseModel):
    step_seconds: int
    start: int = Field(description="Unix seconds of the first bucket.")
    series: dict[str, dict[str, list[int]]] = Field(
        description="task_name -> success/failed/retried -> one count per minute, oldest first."
    )


class HistoryCollector:
    """``taskiq_monitor_history_executions`` and ``taskiq_monitor_history_evicted_total{reason}`` (from the store:
    the same from every exporter sharing it)."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    def collect(self) -> Iterator[Metric]:
        try:
            # Within the scrape's Redis deadline; skipped at once when the state collector's read failed.
            size, evicted = read(self.store.history_counts_sync)
        except Exception:
            return  # taskiq_monitor_state_up (the state collector) reports the outage
        yield GaugeMetricFamily(
            "taskiq_monitor_history_executions", "Execution records held by the history store.", value=size
        )
        family = CounterMetricFamily(
            "taskiq_monitor_history_evicted",
            "Executions deleted from the history by retention: reason=age (older than the retention) or "
            "count (the oldest beyond the cap).",
            labels=["reason"],
        )
        for reason in ("age", "count"):
            family.add_metric([reason], evicted.get(reason, 0))
        yield family


class History:
    """Router + retention loop + collector of one exporter app."""

    def __init__(self, settings: Settings, store: StateStore, requests: Outage | None = None) -> None:
        self.settings = settings
        self.store = store
        self.collector = HistoryCollector(store)
        self.retention_outage = Outage(logger, "taskiq-monitor history retention", redis_target(settings.redis_url))
        self.requests_outage = requests or requests_outage(settings)
        self._task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        if self.settings.history_enabled:
            self._task = asyncio.create_task(self._expire_loop(), name="taskiq-monitor-history-retention")
        try:
            yield
        finally:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
                self._task = None

    async def _expire_loop(self) -> None:
        while True:
            try:
                _aged, _counted, more = await self.store.history_expire_step()
            except Exception as exc:
                self.retention_outage.failed(exc)
                more = False
            else:
                self.retention_outage.recovered()
            await asyncio.sleep(_EXPIRE_PAUSE if more else _EXPIRE_INTERVAL)

    def router(self, auth: Any) -> APIRouter:
        router = APIRouter(dependencies=[auth], tags=["history"])
        store = self.store
        settings = self.settings
        outage = self.requests_outage

        @router.get(
            "/api/v1/executions",
            response_model=ExecutionsPage,
            summary="Execution history, newest first, with cursor pagination",
            description="One entry per execution attempt, with its latest state. Filters combine with AND; task_name "
            "and status are repeatable or comma-separated; since/until (RFC 3339 or unix seconds) select by the time "
            "the execution was first recorded (enqueued, or started when it was never seen pending). Every page "
            "holds every match in order. Retention: TASKIQ_MONITOR_HISTORY_RETENTION_DAYS and "
            "TASKIQ_MONITOR_HISTORY_MAX_EXECUTIONS.",
            responses={
                **bad_input("Unknown filter value, malformed cursor, bad time, limit out of range."),
                **UNAVAILABLE_RESPONSE,
            },
        )
        async def get_executions(
            params: FilterParams = Depends(EXECUTION_FILTERS),
            task_id: str | None = Query(
                None, max_length=MAX_TASK_ID_CHARS, description="Only the attempts of this task."
            ),
            cursor: str | None = Query(None, max_length=1024, description="next_cursor of the previous page."),
            limit: int = Query(MAX_PAGE, ge=1, le=MAX_PAGE, description=f"Page size (at most {MAX_PAGE})."),
        ) -> ExecutionsPage:
            try:
                known = set(await store.task_names()) if params.task_name else set()
            except Exception as exc:
                raise unavailable(outage, exc) from None
            try:
                filters = params.parse(known)
                query = HistoryQuery(
                    task_names=filters.task_names,
                    statuses=filters.statuses,
                    since_ms=filters.since_ms,
                    until_ms=filters.until_ms,
                    cursor=decode_cursor(cursor) if cursor else None,
                    limit=limit,
                )
            except InputError as exc:
                raise api_error(exc.code, exc.message) from None
            except ValueError as exc:
                raise api_error("malformed_cursor", str(exc)) from None
            try:
                if task_id is not None:
                    attempts = await store.history_attempts(bounded_task_id(task_id))
                else:
                    page = await store.history_page(query)
            except Exception as exc:
                raise unavailable(outage, exc) from None
            outage.recovered()
            if task_id is not None:
                return _attempts_page(attempts, query)
            return ExecutionsPage(
                executions=[ExecutionSummary.model_validate(e.summary()) for e in page.executions],
                next_cursor=page.next_cursor,
            )

        @router.get(
            "/api/v1/executions/{task_id:path}",
            response_model=TaskAttempts,
            summary="Every attempt of one task, with parameters and error detail",
            responses={
                404: {"model": ErrorResponse, "description": "No attempt of this task is held."},
                **bad_input(f"A task id longer than {MAX_TASK_ID_CHARS} characters."),
            },
        )
        async def get_task_attempts(task_id: str = Path(max_length=MAX_TASK_ID_CHARS)) -> TaskAttempts:
            recorded = bounded_task_id(task_id)  # as the worker recorded it
            try:
                attempts = await store.history_attempts(recorded)
            except Exception as exc:
                raise unavailable(outage, exc) from None
            outage.recovered()
            if not attempts:
                raise api_error("unknown_task_id", f"no execution of task {shown(task_id)} is held", 404)
            return TaskAttempts(
                task_id=recorded,
                attempts=[
                    ExecutionDetail.model_validate(a.detail()) for a in sorted(attempts, key=lambda a: a.attempt)
                ],
            )

        @router.get(
            "/api/v1/tasks/series",
            response_model=TaskSeries,
            summary="Finished executions per minute and task type (sparklines)",
            description="From the per-minute counters of the state, kept for TASKIQ_MONITOR_STATS_WINDOW_SECONDS.",
            responses=bad_input("minutes out of range, or beyond the counters kept."),
        )
        async def get_series(
            minutes: int = Query(60, ge=1, le=MAX_SERIES_MINUTES, description="Minutes, the current one included."),
        ) -> TaskSeries:
            kept = settings.stats_window_seconds // 60
            if minutes > kept:
                raise api_error(
                    "window_too_long",
                    f"minutes={minutes}: per-minute counters are kept for {kept} minutes "
                    "(TASKIQ_MONITOR_STATS_WINDOW_SECONDS)",
                )
            try:
                start, series = await store.history_series(minutes)
            except Exception as exc:
                raise unavailable(outage, exc) from None
            outage.recovered()
            return TaskSeries(step_seconds=60, start=start, series=series)

        return router


def _attempts_page(attempts: list[Execution], query: HistoryQuery) -> ExecutionsPage:
    """The ``task_id`` filter: a task's attempts, filtered and paged like any page (newest first by first-recorded
    time, then by member, as the history's indexes order them; the same cursor)."""
    rows: list[tuple[tuple[int, bytes], Execution]] = []
    for a in attempts:
        name = a.fields["task_name"]
        if query.task_names is not None and name not in query.task_names:
            continue
        if query.statuses is not None and a.status not in query.statuses:
            continue
        if query.since_ms is not None and a.score < query.since_ms:
            continue
        if query.until_ms is not None and a.score > query.until_ms:
            continue
        key = (a.score, encode_member(a.task_id, a.attempt))
        if query.cursor is not None and key >= query.cursor:
            continue
        rows.append((key, a))
    rows.sort(key=lambda row: row[0], reverse=True)
    page = rows[: query.limit]
    more = len(rows) > query.limit
    return ExecutionsPage(
        executions=[ExecutionSummary.model_validate(a.summary()) for _, a in page],
        next_cursor=encode_cursor(*page[-1][0]) if more else None,
    )


def include_history(
    app: FastAPI, settings: Settings, auth: Any, store: StateStore, outage: Outage | None = None
) -> History:
    """Mount the history API on ``app`` (the caller adds ``history.collector`` and ``history.lifespan``); ``outage``
    is shared with the app's other request handlers."""
    history = History(settings, store, outage)
    router = history.router(auth)
    app.include_router(router)
    return history
