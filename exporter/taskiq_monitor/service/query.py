"""Client input shared by the REST API and the WebSocket feed: filters, event ids and times.

Every function raises :class:`InputError` with a stable ``code`` and a readable message; the REST API turns it into
a 422, the feed into an ``error`` frame. Rules (documented in the README, "REST API"):

* ``task_name`` / ``status``: repeatable or comma-separated; unknown values are rejected (a typo would otherwise
  match nothing, silently).
* Event ids and cursors: ``<milliseconds>-<sequence>`` in ASCII digits only — ``int()`` would accept other
  scripts' digits (``"١٢-٠"``), which then name an event the client never saw.
* Times: RFC 3339 or unix seconds. A time without a timezone is read as UTC (like every time the exporter writes),
  never as the exporter host's local time. ``since`` after ``until`` is an error, not an empty page.
"""

from __future__ import annotations

import difflib
import heapq
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Query
from fastapi.exceptions import RequestValidationError

from taskiq_monitor.events import EVENT_STATUSES
from taskiq_monitor.store import parse_event_id
from taskiq_monitor.store.model import MAX_ID_PART

SHOWN_CHARS = 80  # of a value a client sent, in a message: enough to recognise it, never the whole of a long one
SHOWN_VALUES = 5  # of the unknown values, and of the closest known task names, in a message


class InputError(ValueError):
    """Bad client input, reported as a 422 (REST) or an error frame (WebSocket)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _split(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for value in values or []:
        out.extend(v.strip() for v in value.split(",") if v.strip())
    return out


def shown(value: str) -> str:
    """``value`` for a message: quoted, and cut to :data:`SHOWN_CHARS` with its length when longer."""
    if len(value) <= SHOWN_CHARS:
        return repr(value)
    return f"{value[:SHOWN_CHARS]!r}… ({len(value):,} characters)"


def _listing(values: list[str]) -> str:
    """At most :data:`SHOWN_VALUES` values, each :func:`shown`, and how many more."""
    text = ", ".join(shown(v) for v in values[:SHOWN_VALUES])
    return text + (f" and {len(values) - SHOWN_VALUES:,} more" if len(values) > SHOWN_VALUES else "")


def _closest(name: str, known: set[str]) -> list[str]:
    """The known names most like ``name`` (difflib's ratio of at least 0.6), best first. ``ratio`` is quadratic in
    the length; computed for the few best by ``quick_ratio`` (linear, an upper bound) only, so thousands of task
    names or a long value cost milliseconds, not seconds of the event loop."""
    matcher = difflib.SequenceMatcher()
    matcher.set_seq2(name[:SHOWN_CHARS])  # seq2's index is built once
    bounds: list[tuple[float, str]] = []
    for candidate in known:
        matcher.set_seq1(candidate[: SHOWN_CHARS * 2])
        bounds.append((matcher.quick_ratio(), candidate))
    scored: list[tuple[float, str]] = []
    for bound, candidate in heapq.nlargest(SHOWN_VALUES * 4, bounds):
        if bound < 0.6:
            break
        matcher.set_seq1(candidate[: SHOWN_CHARS * 2])
        if (ratio := matcher.ratio()) >= 0.6:
            scored.append((ratio, candidate))
    return [candidate for _, candidate in sorted(scored, key=lambda s: (-s[0], s[1]))]


def _known_names(unknown: list[str], known: set[str]) -> str:
    """The known task names worth reading: all when they are few, else the closest to what was sent and a count
    (hundreds of task types would make a message of tens of kilobytes)."""
    if not known:
        return "known: none yet"
    if len(known) <= SHOWN_VALUES:
        return "known: " + ", ".join(shown(n) for n in sorted(known))
    close: list[str] = []
    for name in unknown[:2]:  # bounded work whatever was sent
        close += [match for match in _closest(name, known) if match not in close]
    count = f"{len(known):,} task names known; GET /api/v1/tasks lists them"
    if not close:
        return count
    return f"closest: {', '.join(shown(n) for n in close[:SHOWN_VALUES])} ({count})"


def parse_filters(
    task_names: list[str] | None, statuses: list[str] | None, known: set[str]
) -> tuple[frozenset[str] | None, frozenset[str] | None]:
    """``(task names, statuses)``, each ``None`` for "all"; frozen, so clients can be grouped by their filter."""
    names = _split(task_names)
    unknown = sorted(set(names) - known)
    if unknown:
        raise InputError("unknown_task_name", f"unknown task_name {_listing(unknown)}; {_known_names(unknown, known)}")
    stats = _split(statuses)
    bad = sorted(set(stats) - set(EVENT_STATUSES))
    if bad:
        raise InputError("unknown_status", f"unknown status {_listing(bad)}; one of: {', '.join(EVENT_STATUSES)}")
    return (frozenset(names) or None), (frozenset(stats) or None)


def parse_id(value: str, name: str) -> tuple[int, int]:
    value = value.strip()
    try:
        if not value.isascii():
            raise ValueError
        return parse_event_id(value)
    except ValueError:
        raise InputError(
            "malformed_id",
            f"{name}: malformed event id {shown(value)}: expected '<milliseconds>-<sequence>' in ASCII digits, "
            f"each at most {MAX_ID_PART}, e.g. '1700000000000-0'",
        ) from None


def as_utc(moment: datetime) -> datetime:
    """A time without a timezone is UTC (the exporter's host timezone must not change what a query means)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def epoch_ms(moment: datetime, name: str) -> int:
    """Milliseconds since the epoch (stream ids count from it); earlier times are rejected."""
    moment = as_utc(moment)
    try:
        ms = int(moment.timestamp() * 1000)
    except (OverflowError, OSError, ValueError):
        ms = -1
    if ms < 0:
        raise InputError("invalid_time", f"{name}: {moment.isoformat()} is before 1970-01-01T00:00:00Z")
    return ms


def time_range(since: datetime | None, until: datetime | None) -> tuple[int | None, int | None]:
    """``(since_ms, until_ms)``; rejects a reversed range."""
    lower = epoch_ms(since, "since") if since is not None else None
    upper = epoch_ms(until, "until") if until is not None else None
    if since is not None and until is not None and lower is not None and upper is not None and lower > upper:
        raise InputError(
            "invalid_range", f"since ({as_utc(since).isoformat()}) is after until ({as_utc(until).isoformat()})"
        )
    return lower, upper


def matches(task_names: frozenset[str] | None, statuses: frozenset[str] | None, task_name: str, status: str) -> bool:
    """Whether an event passes the filters (``None`` = all)."""
    return (task_names is None or task_name in task_names) and (statuses is None or status in statuses)


@dataclass(frozen=True, slots=True)
class Filters:
    """What a REST query selects (``None`` = all); times in milliseconds since the epoch."""

    task_names: frozenset[str] | None
    statuses: frozenset[str] | None
    since_ms: int | None
    until_ms: int | None


@dataclass(frozen=True, slots=True)
class FilterParams:
    """The filter parameters of a REST query as received; :meth:`parse` applies the rules above."""

    task_name: list[str] | None
    status: list[str] | None
    since: datetime | None
    until: datetime | None

    def parse(self, known: set[str]) -> Filters:
        """The filters, checked (``known``: the task names held, needed only when ``task_name`` is given)."""
        names, statuses = parse_filters(self.task_name, self.status, known)
        since_ms, until_ms = time_range(self.since, self.until)
        return Filters(names, statuses, since_ms, until_ms)


def filter_params(moment: str) -> Callable[..., FilterParams]:
    """A FastAPI dependency declaring the filter parameters (``task_name``, ``status``, ``since``, ``until``) of a
    route; ``moment`` names the time ``since``/``until`` select by."""

    def dependency(
        task_name: list[str] | None = Query(None, description="Task type(s)."),
        status: list[str] | None = Query(None, description=f"One of {EVENT_STATUSES}."),
        since: datetime | None = Query(None, description=f"Oldest {moment} (inclusive; UTC if no timezone)."),
        until: datetime | None = Query(None, description=f"Newest {moment} (inclusive; UTC if no timezone)."),
    ) -> FilterParams:
        return FilterParams(task_name, status, since, until)

    return dependency


def validation_message(exc: RequestValidationError) -> str:
    """FastAPI's validation errors as one line, ``name: what is wrong`` per parameter, without the values (an
    overlong task id, a token in a login body are not sent back)."""
    parts = []
    for error in exc.errors():
        loc = [str(part) for part in error.get("loc", ()) if not isinstance(part, int)]  # a position in the JSON
        where = ".".join(part for part in loc if part not in ("query", "path", "body", "header", "cookie"))
        if not where:
            where = "body" if loc[:1] == ["body"] else "request"
        message = "not valid JSON" if error.get("type") == "json_invalid" else error.get("msg", "invalid value")
        parts.append(f"{where}: {message}")
    return "; ".join(parts) or "invalid request"
