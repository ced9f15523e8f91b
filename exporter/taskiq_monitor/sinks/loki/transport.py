"""The HTTP side of shipping to Loki: one push and its outcome, auth headers, backoff, isolating a rejected record.

Runs only in the sink's sender thread (never on an event loop). Every push has a timeout — the client's, or less
when the flush budget of a shutdown ends sooner — and :meth:`Transport.abort` wakes a push blocked on a hanging Loki
by shutting its sockets down, so ``close()`` never waits for a push's own timeout.

Outcomes: 2xx is shipped; 400/413/422 mean this payload will never be accepted as a whole (:func:`isolate` splits it
until the bad record is alone, and only that one is dropped); anything else — 5xx, 429 (honouring ``Retry-After``),
401/403/404 (warned: check URL and credentials), a refused connection, a timeout — is retried with exponential
backoff and jitter, and the sink spools meanwhile.
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import ssl
import time
import weakref
from collections.abc import Callable
from typing import Any

import httpx

from taskiq_monitor.settings import Settings
from taskiq_monitor.sinks.loki.format import PUSH_PATH, PushEntry, encode_push, gzip_body, is_gzip, retry_after_seconds

logger = logging.getLogger(__name__)

# warn(kind, message, *args): log once per kind at WARNING, then at DEBUG (the sink's warn-once)
Warn = Callable[..., None]


class Outcome:
    OK = "ok"
    BAD = "bad"  # 400/413/422: this payload will never be accepted as a whole
    RETRY = "retry"


_TLS_CONTEXT: ssl.SSLContext | None = None


def _tls_context() -> ssl.SSLContext:
    """The verifying TLS context of this process's Loki clients (httpx's default one), built once.

    httpx builds one for every client, even for an ``http://`` URL, by loading the system's CA bundle: ~20-40 ms of
    CPU each time the shipper starts (after a fork, a close, a restart). The context is configuration only, and
    read-only once built: one per process serves every client.
    """
    global _TLS_CONTEXT
    context = _TLS_CONTEXT
    if context is None:  # two threads racing here build two; either serves (no lock to inherit across fork)
        context = _TLS_CONTEXT = httpx.create_ssl_context()
    return context


_GZIP = {"Content-Encoding": "gzip"}  # per push: a spooled body is gzip whatever loki_compression says


class Transport:
    """One HTTP client to Loki's push endpoint, created in the sender thread and dropped after a fork."""

    def __init__(self, settings: Settings, warn: Warn, transport: httpx.BaseTransport | None = None) -> None:
        if not settings.loki_url:
            raise ValueError("a Loki transport needs settings.loki_url")
        self.settings = settings
        self.url = settings.loki_url + PUSH_PATH
        self._warn = warn
        self._transport = transport
        self._client: httpx.Client | None = None
        self._sockets: weakref.WeakSet[socket.socket] = weakref.WeakSet()  # to abort a hanging push on close

    def open(self) -> None:
        """Create the HTTP client (in the sender thread, never on the caller's event loop)."""
        if self._client is None:
            self._client = self._new_client()

    def post(self, body: bytes, *, deadline: float | None = None, abandoned: bool = False) -> tuple[str, float | None]:
        """Push a body (gzip, or plain JSON): its :class:`Outcome` and the ``Retry-After`` delay, if any.

        With ``deadline`` (monotonic; a shutdown's flush budget), the push waits no longer than until then.
        """
        if abandoned:
            return Outcome.RETRY, None
        timeout: httpx.Timeout | None = None
        if deadline is not None:
            remaining = max(0.05, deadline - time.monotonic())
            timeout = httpx.Timeout(
                min(self.settings.loki_timeout_seconds, remaining),
                connect=min(self.settings.loki_connect_timeout_seconds, remaining),
            )
        try:
            client = self._client
            if client is None:
                client = self._client = self._new_client()
            extensions = {"trace": self._trace}
            headers = _GZIP if is_gzip(body) else None
            if timeout is not None:
                response = client.post(self.url, content=body, headers=headers, timeout=timeout, extensions=extensions)
            else:
                response = client.post(self.url, content=body, headers=headers, extensions=extensions)
        except httpx.HTTPError as exc:
            logger.debug("taskiq-monitor: Loki push failed: %s", type(exc).__name__)
            return Outcome.RETRY, None
        except Exception:
            logger.debug("taskiq-monitor: Loki push failed", exc_info=True)
            return Outcome.RETRY, None
        status = response.status_code
        if 200 <= status < 300:
            return Outcome.OK, None
        if status in (400, 413, 422):
            logger.debug("taskiq-monitor: Loki rejected a push (%d): %.300s", status, response.text)
            return Outcome.BAD, None
        if status in (401, 403, 404):
            self._warn(f"http{status}", "taskiq-monitor: Loki answered %d (check URL/credentials); spooling", status)
        return Outcome.RETRY, retry_after_seconds(response.headers.get("retry-after"))

    def abort(self) -> None:
        """Close the client; a push blocked in a read (a hanging Loki) wakes up with an error."""
        # Shutting the sockets down wakes a thread blocked on them (closing alone does not); then the pool closes.
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

    def forget_after_fork(self) -> None:
        # The parent's connections: dropped, never used or shut down here.
        self._client = None
        self._sockets = weakref.WeakSet()

    def _new_client(self) -> httpx.Client:
        return httpx.Client(
            timeout=httpx.Timeout(
                self.settings.loki_timeout_seconds, connect=self.settings.loki_connect_timeout_seconds
            ),
            headers=self.headers(),
            auth=self.auth(),
            transport=self._transport,
            verify=_tls_context(),
        )

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore trace hook: remember the sockets of our connections, to abort a hanging push on close."""
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if isinstance(sock, socket.socket):
                self._sockets.add(sock)

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": "taskiq-monitor"}
        if self.settings.loki_bearer_token is not None:
            headers["Authorization"] = f"Bearer {self.settings.loki_bearer_token.get_secret_value()}"
        if self.settings.loki_tenant_id:
            headers["X-Scope-OrgID"] = self.settings.loki_tenant_id
        return headers

    def auth(self) -> httpx.BasicAuth | None:
        if self.settings.loki_username and self.settings.loki_password is not None:
            return httpx.BasicAuth(self.settings.loki_username, self.settings.loki_password.get_secret_value())
        return None


class Backoff:
    """Exponential backoff with jitter between failed pushes, raised to ``Retry-After`` when Loki sends one."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.step = 0  # failures in a row
        self.next_probe = 0.0  # monotonic time of the next attempt

    def failed(self, retry_after: float | None) -> None:
        self.step += 1
        base = self.settings.loki_backoff_initial_seconds * 2 ** min(self.step - 1, 16)
        delay = min(self.settings.loki_backoff_max_seconds, base) * random.uniform(0.5, 1.0)  # jitter
        if retry_after is not None:
            delay = min(self.settings.loki_backoff_max_seconds, max(delay, retry_after))
        self.next_probe = time.monotonic() + delay

    def reset(self) -> None:
        self.step = 0

    def remaining(self) -> float:
        """Seconds until the next attempt is due (0 or less: now)."""
        return self.next_probe - time.monotonic() if self.step else 0.0


def isolate(
    entries: list[PushEntry],
    post: Callable[[bytes], str],
    shipped: Callable[[int], None],
    rejected: Callable[[], None],
) -> list[PushEntry]:
    """Send ``entries`` in halves until the rejected ones are alone; drop those. Returns what stays unsent.

    ``post`` pushes a gzip body and returns its :class:`Outcome`; ``shipped(n)`` is called for every accepted half
    and ``rejected()`` for every record dropped alone. A non-BAD failure (Loki went away while splitting) stops the
    split: the unsent entries are returned, for the spool.
    """
    if len(entries) == 1:
        rejected()
        return []
    middle = len(entries) // 2
    for index, half in enumerate((entries[:middle], entries[middle:])):
        outcome = post(gzip_body(encode_push(half)))
        if outcome == Outcome.OK:
            shipped(len(half))
        elif outcome == Outcome.BAD:
            rest = isolate(half, post, shipped, rejected)
            if rest:
                return rest + (entries[middle:] if index == 0 else [])
        else:
            return half + (entries[middle:] if index == 0 else [])
    return []
