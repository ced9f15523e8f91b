"""The REST API: ``GET /api/v1/tasks`` (health of every task type) and ``GET /api/v1/events`` (recent events).

Both read the shared state written by ``StateSink`` (see ``taskiq_monitor.store``). Input rules live in
:mod:`taskiq_monitor.service.query`; the token check in :mod:`taskiq_monitor.service.auth`.

To add an endpoint, add a route to the router returned by :func:`router` (or include a router of your own module
from ``app.create_app``), with ``dependencies=[auth]`` so it is protected like the others.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from pydantic import BaseModel, Field

from taskiq_monitor.logs import Outage, redis_target
from taskiq_monitor.service.errors import ErrorResponse, api_error, bad_input
from taskiq_monitor.service.query import FilterParams, InputError, filter_params, matches, parse_id
from taskiq_monitor.settings import Settings
from taskiq_monitor.store import Snapshot, StateStore, format_event_id

logger = logging.getLogger(__name__)

MAX_PAGE = 50
EVENT_FILTERS = filter_params("recording time")  # task_name, status, since, until
SCAN_CHUNK = 500
# The documented 503 of every route over the store (this module's and the history API's).
UNAVAILABLE_RESPONSE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorResponse, "description": "The state store (Redis) is unavailable (code unavailable)."}
}
_MAX_SCAN = 20_000  # stream entries examined per /api/v1/events request (filters may match rarely)


# -- models ------------------------------------------------------------------------------------------------------
class WindowStats(BaseModel):
    seconds: int = Field(description="Length of the window (minute resolution, the current minute included).")
    success: int
    failed: int
    retried: int
    success_rate: float | None = Field(description="success / (success + failed); null when nothing finished.")
    avg_duration_seconds: float | None = Field(
        description="FR-013: sum(duration) / count(success) of successful attempts in the window."
    )


class TaskHealth(BaseModel):
    task_name: str
    pending: int = Field(description="Sent and not yet started (all processes and hosts).")
    oldest_pending_age_seconds: float | None
    running: int = Field(description="Executing now in live worker processes.")
    success_total: int
    failed_total: int
    retried_total: int
    avg_duration_seconds: float | None = Field(description="FR-013: mean duration of all successful attempts.")
    pending_expired_total: int = Field(description="Pending entries expired by the horizon (lost messages).")
    window: WindowStats


class TasksResponse(BaseModel):
    generated_at: datetime
    workers: int = Field(description="Live worker processes (by heartbeat).")
    tasks: list[TaskHealth]


class EventItem(BaseModel):
    id: str = Field(description="Stream id '<ms>-<seq>'; pass it as last_event_id / cursor.")
    event: dict[str, Any] = Field(description="The event record (schema_version 1).")


class EventsPage(BaseModel):
    events: list[EventItem] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as cursor for older events; null at the end of the stream.")


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def tasks_response(snap: Snapshot, window: int) -> TasksResponse:
    tasks: list[TaskHealth] = []
    for name in sorted(snap.tasks):
        t = snap.tasks[name]
        w = t.window
        tasks.append(
            TaskHealth(
                task_name=name,
                pending=t.pending,
                oldest_pending_age_seconds=(
                    max(0.0, snap.taken_at - t.oldest_pending_at) if t.oldest_pending_at is not None else None
                ),
                running=t.running,
                success_total=int(t.totals.get("success", 0)),
                failed_total=int(t.totals.get("failed", 0)),
                retried_total=int(t.totals.get("retried", 0)),
                avg_duration_seconds=_ratio(t.totals.get("dur_sum", 0.0), t.totals.get("dur_n", 0)),
                pending_expired_total=t.expired,
                window=WindowStats(
                    seconds=window,
                    success=int(w.get("success", 0)),
                    failed=int(w.get("failed", 0)),
                    retried=int(w.get("retried", 0)),
                    success_rate=_ratio(w.get("success", 0), w.get("success", 0) + w.get("failed", 0)),
                    avg_duration_seconds=_ratio(w.get("dur_sum", 0.0), w.get("dur_n", 0)),
                ),
            )
        )
    return TasksResponse(generated_at=datetime.fromtimestamp(snap.taken_at, UTC), workers=snap.workers, tasks=tasks)


def unavailable(outage: Outage, exc: Exception) -> HTTPException:
    # The cause is logged (once per outage, not per request: a dashboard polls through it), never returned: Redis
    # errors name hosts and ports.
    outage.failed(exc)
    return api_error("unavailable", "state store unavailable", status.HTTP_503_SERVICE_UNAVAILABLE)


def requests_outage(settings: Settings) -> Outage:
    """The request handlers' view of a store outage; each answer read from the store ends it."""
    return Outage(logger, "taskiq-monitor API", redis_target(settings.redis_url))


async def known_tasks(store: StateStore, outage: Outage) -> set[str]:
    try:
        return await store.task_names()
    except Exception as exc:
        raise unavailable(outage, exc) from None


# -- routes --------------------------------------------------------------------------------------------------------
def router(settings: Settings, store: StateStore, auth: Any, outage: Outage | None = None) -> APIRouter:
    """The REST routes over ``store``; ``auth`` is the token dependency (``Depends(require_token(settings))``);
    ``outage`` is shared with the app's other request handlers (the history API), so an outage is logged once."""
    api = APIRouter(dependencies=[auth], tags=["live"])
    outage = outage or requests_outage(settings)

    @api.get(
        "/api/v1/tasks",
        response_model=TasksResponse,
        summary="Health snapshot of every task type",
        description="Pending, oldest pending age, running, finished counts, success rate and average duration "
        "over the stats window (TASKIQ_MONITOR_STATS_WINDOW_SECONDS), for every known task type.",
        responses=UNAVAILABLE_RESPONSE,
    )
    async def get_tasks() -> TasksResponse:
        try:
            snap = await store.snapshot(with_stats=True)
        except Exception as exc:
            raise unavailable(outage, exc) from None
        outage.recovered()
        return tasks_response(snap, settings.stats_window_seconds)

    @api.get(
        "/api/v1/events",
        response_model=EventsPage,
        summary="Recent task events, newest first, with cursor pagination",
        description="Events retained in the stream (TASKIQ_MONITOR_STREAM_MAX_EVENTS). Filters combine with AND; "
        "task_name and status are repeatable or comma-separated. since/until accept RFC 3339 or unix seconds "
        "and select by the time the event was recorded; a time without a timezone is UTC. Unknown filter values, "
        "malformed ids (ASCII digits only) and since after until are rejected with 422.",
        responses={
            **bad_input("Unknown filter value, malformed cursor, reversed time range, limit out of range."),
            **UNAVAILABLE_RESPONSE,
        },
    )
    async def get_events(
        params: FilterParams = Depends(EVENT_FILTERS),
        limit: int = Query(MAX_PAGE, ge=1, le=MAX_PAGE, description=f"Page size (at most {MAX_PAGE})."),
        cursor: str | None = Query(None, description="next_cursor of the previous page."),
    ) -> EventsPage:
        try:
            filters = params.parse(await known_tasks(store, outage) if params.task_name else set())
            names, statuses = filters.task_names, filters.statuses
            upper: tuple[int, int] | None = None
            if filters.until_ms is not None:
                upper = (filters.until_ms + 1, 0)
            if cursor is not None:
                key = parse_id(cursor, "cursor")
                upper = key if upper is None else min(upper, key)
            lower = f"{filters.since_ms}-0" if filters.since_ms is not None else "-"
        except InputError as exc:
            raise api_error(exc.code, exc.message) from None
        items: list[EventItem] = []
        scanned = 0
        last_seen: str | None = None
        exhausted = False
        try:
            while len(items) < limit and scanned < _MAX_SCAN:
                if upper == (0, 0):  # nothing is older than the first possible id
                    exhausted = True
                    break
                before = f"({format_event_id(upper)}" if upper is not None else "+"
                chunk = await store.range_desc(before, lower, SCAN_CHUNK if names or statuses else limit)
                if not chunk:
                    exhausted = True
                    break
                for entry in chunk:
                    scanned += 1
                    last_seen = entry.id
                    upper = entry.key
                    if matches(names, statuses, entry.task_name, entry.status):
                        items.append(EventItem(id=entry.id, event=json.loads(entry.payload)))
                        if len(items) == limit:
                            break
        except Exception as exc:
            raise unavailable(outage, exc) from None
        outage.recovered()
        if len(items) == limit:
            next_cursor: str | None = items[-1].id
        else:
            next_cursor = None if exhausted else last_seen
        return EventsPage(events=items, next_cursor=next_cursor)

    return api
