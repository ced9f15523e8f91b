"""``LokiPushDouble``: a protocol double of Loki's push endpoint, for tests and benchmarks.

No Loki binary is installable here, so tests talk to this real HTTP server on loopback, which implements the part
of Loki the shipper depends on and checks it strictly:

* ``POST /loki/api/v1/push`` with ``Content-Type: application/json``, optionally ``Content-Encoding: gzip``;
* body ``{"streams": [{"stream": {label: value}, "values": [[ts_ns, line], [ts_ns, line, {metadata}]]}]}`` and
  nothing else; label names ``[a-zA-Z_][a-zA-Z0-9_]*`` (no ``__`` prefix), non-empty string values, only the
  allowed label names (``task_id``/``trace_id`` are never labels); timestamps are decimal nanosecond strings
  within a day of now; lines are strings; structured metadata is a flat string→string object;
* accepted entries are stored and de-duplicated like Loki does (same stream, timestamp and line), so a test can
  tell "arrived" from "arrived twice" (``duplicates``).

Failure modes, switchable at any time with :meth:`set_mode`: ``ok``; ``503``; ``429`` (with ``Retry-After``);
``poison`` (400 for a request that contains ``poison_marker`` in any line — the whole request is rejected, as Loki
does for an invalid request); ``hang`` (reads the request, never answers until the mode changes); ``down`` (the
listening socket is closed: connection refused; it reopens on the same port).

Usage::

    with LokiPushDouble() as loki:
        settings = Settings(loki_url=loki.url)
        ...
        loki.wait_for(lambda d: len(d.entries) >= 10)
"""

from __future__ import annotations

import gzip
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
DEFAULT_ALLOWED_LABELS = frozenset({"service_name", "task_name", "status", "env"})
MODES = ("ok", "503", "429", "poison", "hang", "down")


class PushSchemaError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Entry:
    labels: tuple[tuple[str, str], ...]
    ts: str
    line: str
    metadata: tuple[tuple[str, str], ...]

    @property
    def record(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.line)
        return value


@dataclass
class Stats:
    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    request_times: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, status)
    schema_errors: list[str] = field(default_factory=list)


def validate_push(body: dict[str, Any], allowed_labels: frozenset[str], now_ns: int) -> list[Entry]:
    """Strictly check a decoded push body; return its entries or raise PushSchemaError."""
    if not isinstance(body, dict) or set(body) != {"streams"}:
        raise PushSchemaError(f"top level must be exactly {{'streams': [...]}}, got keys {sorted(body)}")
    streams = body["streams"]
    if not isinstance(streams, list) or not streams:
        raise PushSchemaError("streams must be a non-empty list")
    entries: list[Entry] = []
    for stream in streams:
        if not isinstance(stream, dict) or set(stream) != {"stream", "values"}:
            raise PushSchemaError(f"a stream must have exactly 'stream' and 'values', got {sorted(stream)}")
        labels = stream["stream"]
        if not isinstance(labels, dict) or not labels:
            raise PushSchemaError("stream labels must be a non-empty object")
        for name, value in labels.items():
            if not LABEL_NAME.match(name) or name.startswith("__"):
                raise PushSchemaError(f"invalid label name {name!r}")
            if name not in allowed_labels:
                raise PushSchemaError(f"label {name!r} not allowed (allowed: {sorted(allowed_labels)})")
            if not isinstance(value, str) or not value:
                raise PushSchemaError(f"label {name!r} must be a non-empty string, got {value!r}")
        values = stream["values"]
        if not isinstance(values, list) or not values:
            raise PushSchemaError("values must be a non-empty list")
        for value in values:
            if not isinstance(value, list) or len(value) not in (2, 3):
                raise PushSchemaError(f"a value must be [ts, line] or [ts, line, metadata], got {value!r:.200}")
            ts, line = value[0], value[1]
            if not isinstance(ts, str) or not ts.isdigit():
                raise PushSchemaError(f"timestamp must be a string of nanoseconds, got {ts!r}")
            if abs(int(ts) - now_ns) > 86_400 * 10**9:
                raise PushSchemaError(f"timestamp {ts} is not within a day of now (seconds sent as ns?)")
            if not isinstance(line, str):
                raise PushSchemaError("line must be a string")
            metadata: tuple[tuple[str, str], ...] = ()
            if len(value) == 3:
                meta = value[2]
                if not isinstance(meta, dict):
                    raise PushSchemaError("structured metadata must be an object")
                for key, item in meta.items():
                    if not LABEL_NAME.match(key) or not isinstance(item, str):
                        raise PushSchemaError(f"structured metadata {key!r}={item!r} must be name -> string")
                metadata = tuple(sorted(meta.items()))
            entries.append(Entry(tuple(sorted(labels.items())), ts, line, metadata))
    return entries


class LokiPushDouble:
    """A strict Loki push-protocol receiver on 127.0.0.1; see the module docstring."""

    def __init__(
        self,
        port: int = 0,
        *,
        allowed_labels: frozenset[str] = DEFAULT_ALLOWED_LABELS,
        retry_after: str = "1",
        poison_marker: str = "POISON-RECORD",
        keep_raw: bool = True,
    ) -> None:
        self.allowed_labels = allowed_labels
        self.retry_after = retry_after
        self.poison_marker = poison_marker
        self.keep_raw = keep_raw
        self.mode = "ok"
        self.entries: list[Entry] = []
        self.duplicates = 0
        self.raw_bodies: list[bytes] = []  # decompressed, as received (accepted or not)
        self.encodings: list[str] = []  # the Content-Encoding of every push ("" when plain)
        self.stats = Stats()
        self._seen: set[tuple[Any, ...]] = set()
        self._lock = threading.Lock()
        self._unhang = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = port
        self._open()

    # -- server ----------------------------------------------------------------------------------------------------
    def _open(self) -> None:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._reply(200 if self.path == "/ready" else 404, b"ready\n")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length)
                status, payload, headers = double._handle(self.path, dict(self.headers.items()), data)
                if status == 0:  # hang: never answer; drop the connection once released
                    self.close_connection = True
                    return
                self._reply(status, payload, headers)

            def _reply(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        class Server(ThreadingHTTPServer):
            allow_reuse_address = True
            daemon_threads = True

        self._server = Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="loki-double", daemon=True)
        self._thread.start()

    def _close_listener(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        previous, self.mode = self.mode, mode
        if previous == "hang" and mode != "hang":
            self._unhang.set()
        if mode == "hang":
            self._unhang.clear()
        if mode == "down" and previous != "down":
            self._close_listener()
        elif previous == "down" and mode != "down":
            self._open()

    def close(self) -> None:
        self._unhang.set()
        self._close_listener()

    def __enter__(self) -> LokiPushDouble:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- protocol --------------------------------------------------------------------------------------------------
    def _handle(self, path: str, headers: dict[str, str], data: bytes) -> tuple[int, bytes, dict[str, str]]:
        headers = {k.lower(): v for k, v in headers.items()}
        mode = self.mode
        if mode == "down":  # a keep-alive connection that outlived the listener: drop it unanswered
            return 0, b"", {}
        if mode == "hang":
            self._record(0)
            self._unhang.wait(600)
            return 0, b"", {}
        if path != "/loki/api/v1/push":
            return self._record(404), b"404 page not found\n", {}
        if mode == "503":
            return self._record(503), b"service unavailable\n", {}
        if mode == "429":
            return self._record(429), b"rate limited\n", {"Retry-After": self.retry_after}
        try:
            if headers.get("content-type", "").split(";")[0].strip() != "application/json":
                raise PushSchemaError(f"unsupported Content-Type {headers.get('content-type')!r}")
            encoding = headers.get("content-encoding", "")
            with self._lock:
                self.encodings.append(encoding)
            if encoding == "gzip":
                data = gzip.decompress(data)
            elif encoding:
                raise PushSchemaError(f"unsupported Content-Encoding {encoding!r}")
            if self.keep_raw:
                with self._lock:
                    self.raw_bodies.append(data)
            entries = validate_push(json.loads(data), self.allowed_labels, time.time_ns())
        except (PushSchemaError, ValueError, OSError, EOFError) as exc:
            with self._lock:
                self.stats.schema_errors.append(str(exc))
            return self._record(400), f"invalid push: {exc}\n".encode(), {}
        if mode == "poison" and any(self.poison_marker in e.line for e in entries):
            return self._record(400), b"entry rejected: poisoned record\n", {}
        with self._lock:
            for entry in entries:
                key = (entry.labels, entry.ts, entry.line)
                if key in self._seen:
                    self.duplicates += 1
                    continue
                self._seen.add(key)
                self.entries.append(entry)
        return self._record(204), b"", {}

    def _record(self, status: int) -> int:
        with self._lock:
            self.stats.requests += 1
            self.stats.by_status[status] = self.stats.by_status.get(status, 0) + 1
            self.stats.request_times.append((time.monotonic(), status))
        return status

    # -- test helpers ----------------------------------------------------------------------------------------------
    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            entries = list(self.entries)
        return [e.record for e in entries]

    def record_keys(self) -> list[tuple[str, str, int]]:
        """(task_id, status, attempt) of every stored record, in arrival order."""
        return [(r["task_id"], r["status"], r["attempt"]) for r in self.records()]

    def wait_for(self, predicate: Callable[[LokiPushDouble], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return
            time.sleep(0.02)
        raise AssertionError(
            f"condition not met within {timeout}s: {len(self.entries)} entries, stats {self.stats.by_status}"
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
