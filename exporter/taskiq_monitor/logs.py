"""The package's rules for repeated failures in its own hot paths and background loops.

A failure of monitoring (a broken sink, Loki down, a full spool, Redis away) can repeat for every task or every
retry; logging a warning each time would flood the application's log with the same line. Two helpers:

* :class:`WarnOnce` — the first occurrence of each kind is a warning (with its traceback when asked), later ones are
  debug records, and the counters in ``taskiq_monitor_errors_total`` / ``taskiq_monitor_log_records_total`` carry the
  numbers. Example::

    warn = WarnOnce(logging.getLogger(__name__))
    warn("spool", "taskiq-monitor: spool directory %s unusable", path)

* :class:`Outage` — for a loop that retries a dependency until it is back (the live feed's reader, retention, the
  Loki relay, the workers' state flusher): one warning when it goes down, naming the cause and the address (never a
  password), a reminder with the outage's duration every ``REMIND_SECONDS``, and one info line when it is back.
  Before, an unreachable Redis gave ~120 lines in 8 s, four chained tracebacks among them, none naming Redis's
  address or the cause in its headline. Tracebacks are debug records, except for an unexpected error (not a
  connection error or a timeout: a bug, a script Redis refuses), which is warned with its traceback once per type
  and outage. Example::

    outage = Outage(logger, "taskiq-monitor history", redis_target(settings.redis_url))
    try:
        await store.history_expire_step()
    except Exception as exc:
        outage.failed(exc)
    else:
        outage.recovered()
"""

from __future__ import annotations

import logging
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

__all__ = ["REMIND_SECONDS", "Outage", "WarnOnce", "describe", "is_transient", "redis_target"]

# A reminder while a dependency stays down: often enough that an operator reading the last minutes of a log sees the
# outage is still on, rare enough that an outage of hours stays a few lines per component.
REMIND_SECONDS = 60.0
_CAUSE_MAX = 300  # characters of an exception's message in a log line (a Lua error can quote a whole script)
_USERINFO = re.compile(r"(?<=://)[^/\s@]*@")  # "user:password@" of a URL quoted in an error message

# Redis replies that mean "not now" rather than "never": retried like connection errors.
_TRANSIENT_REPLIES = ("OOM", "BUSY", "LOADING", "MASTERDOWN", "TRYAGAIN", "NOREPLICAS", "READONLY", "CLUSTERDOWN")


class WarnOnce:
    """Log each ``kind`` as a warning the first time, at debug level afterwards (thread-safe enough: a race logs a
    second warning at worst)."""

    __slots__ = ("_seen", "logger")

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._seen: set[str] = set()

    def __call__(self, kind: str, message: str, *args: Any, exc_info: bool = False) -> None:
        if kind not in self._seen:
            self._seen.add(kind)
            self.logger.warning(message, *args, exc_info=exc_info)
        else:
            self.logger.debug(message, *args, exc_info=exc_info)


def is_transient(exc: BaseException) -> bool:
    """Whether a failure means "Redis unreachable or busy, try again" (a connection error, a timeout, a reply such
    as LOADING or READONLY) rather than a bug or a request Redis will never take."""
    if isinstance(exc, ConnectionError | TimeoutError):  # the built-ins (OSError family)
        return True
    try:
        from redis import exceptions
    except ImportError:  # pragma: no cover - redis is a dependency of the state store
        return False
    if isinstance(exc, exceptions.ConnectionError | exceptions.TimeoutError | exceptions.ReadOnlyError):
        return True
    return isinstance(exc, exceptions.ResponseError) and str(exc).startswith(_TRANSIENT_REPLIES)


def describe(exc: BaseException) -> str:
    """``exc`` in one line: ``ConnectionError: Error 111 connecting to 127.0.0.1:1. Connection refused.`` (a URL's
    user name and password removed, the message cut to a few hundred characters)."""
    text = _USERINFO.sub("", " ".join(str(exc).split()))
    if len(text) > _CAUSE_MAX:
        text = text[: _CAUSE_MAX - 1] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def redis_target(url: str | None) -> str:
    """What a Redis URL points at, for log lines: ``Redis at 127.0.0.1:6379/0`` (``unix:/run/redis.sock?db=0``),
    never its user name or password; ``the in-process store`` without a URL."""
    if not url:
        return "the in-process store"
    try:
        parts = urllib.parse.urlsplit(url)
        db = urllib.parse.parse_qs(parts.query).get("db", [""])[0]
        if parts.scheme == "unix":
            return f"Redis at unix:{parts.path}?db={db or '0'}"
        host = parts.hostname or "localhost"
        port = parts.port or 6379
    except ValueError:  # settings validate the URL; never let a message fail over one
        return "Redis (unparsable URL)"
    db = parts.path.lstrip("/") or db or "0"
    host = f"[{host}]" if ":" in host else host
    tls = " (TLS)" if parts.scheme == "rediss" else ""
    return f"Redis at {host}:{port}/{db}{tls}"


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Outage:
    """One component's view of a dependency it keeps retrying: call :meth:`failed` with each failure and
    :meth:`recovered` after each success (cheap while nothing is down: one attribute read).

    * the first failure of an outage: one WARNING naming ``component``, ``target`` and the cause;
    * later failures: DEBUG records with the traceback, and a WARNING reminder with the duration every
      ``remind_seconds``;
    * an unexpected error (not :func:`is_transient`): a WARNING with its traceback, once per exception type and
      outage — it may be a bug, and its traceback is what a report needs;
    * the first success after failures: one INFO line with the outage's duration.

    Thread-safe: a scrape's collectors run in several threads at once.
    """

    __slots__ = (
        "_clock",
        "_failures",
        "_lock",
        "_next_reminder",
        "_remind",
        "_seen",
        "_since",
        "component",
        "logger",
        "target",
    )

    def __init__(
        self,
        logger: logging.Logger,
        component: str,
        target: str,
        *,
        remind_seconds: float = REMIND_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.component = component
        self.target = target
        self._remind = remind_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None  # start of the current outage (clock), None while up
        self._next_reminder = 0.0
        self._failures = 0
        self._seen: set[type[BaseException]] = set()  # unexpected error types warned in this outage

    @property
    def down(self) -> bool:
        return self._since is not None

    @property
    def failures(self) -> int:
        """Failures of the current (or the last) outage."""
        return self._failures

    def failed(self, exc: BaseException) -> None:
        now = self._clock()
        unexpected = not is_transient(exc)
        with self._lock:
            first = self._since is None
            if first:
                self._since = now
                self._next_reminder = now + self._remind
                self._failures = 0
                self._seen.clear()
            self._failures += 1
            new_kind = unexpected and type(exc) not in self._seen
            if new_kind:
                self._seen.add(type(exc))
            remind = not first and not new_kind and now >= self._next_reminder
            if remind:
                self._next_reminder = now + self._remind
            failures, since = self._failures, now if self._since is None else self._since
        if first or new_kind:
            verb = "is unavailable" if not unexpected else "failed"
            # The traceback of a connection error says nothing the cause does not; that of anything else may.
            self.logger.warning(
                "%s: %s %s (%s); retrying%s",
                self.component,
                self.target,
                verb,
                describe(exc),
                "" if unexpected else ", quietly until it is back",
                exc_info=exc if unexpected else None,
            )
        elif remind:
            self.logger.warning(
                "%s: %s still unavailable after %s (%d failed attempts; last: %s)",
                self.component,
                self.target,
                _duration(now - since),
                failures,
                describe(exc),
            )
        if self.logger.isEnabledFor(logging.DEBUG) and not (new_kind and unexpected):
            self.logger.debug("%s: %s: attempt %d failed", self.component, self.target, failures, exc_info=exc)

    def recovered(self) -> None:
        if self._since is None:  # the hot path: nothing was down
            return
        now = self._clock()
        with self._lock:
            since, failures = self._since, self._failures
            if since is None:
                return  # another thread reported it
            self._since = None
        self.logger.info(
            "%s: %s reachable again after %s (%d failed attempts)",
            self.component,
            self.target,
            _duration(now - since),
            failures,
        )
