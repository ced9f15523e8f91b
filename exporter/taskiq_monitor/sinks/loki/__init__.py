"""Ship task events to Loki without losing them when Loki is slow, down or rejecting.

Enabled by ``TASKIQ_MONITOR_LOKI_URL=http://loki:3100`` (see ``settings.py``, section "loki"). Every record is one
JSON line (``events.to_record``) in a stream labelled ``service_name``, ``task_name``, ``status`` (and ``env``
when configured); ``task_id`` and ``trace_id`` travel as structured metadata, never as labels. Query it with::

    {service_name="taskiq", task_name="score_message_task", status="failed"} | json

How a record travels::

    emit() ──append──▶ queue ──collector thread──▶ batch ──▶ outbox ──sender thread──▶ POST /loki/api/v1/push
      (hot path)      (bounded)  (serialize, gzip)   │                 │  2xx: shipped
                                                     ▼                 │  400: split, drop only the bad record
                                               on-disk spool ◀─────────┘  5xx/429/refused/timeout: retry, then spool

The modules, one concern each (imports run down this list, never up):

* ``format`` — the push format: entries, push bodies (encode, decode, gzip), ``Batch``, ``Retry-After``. Pure.
* ``spool`` — the on-disk spool: per-process files, locks, adoption of dead processes' files, the cap.
* ``transport`` — one push over HTTP and its outcome, auth headers, backoff, isolating a rejected record.
* ``hooks`` — the at-fork and ``atexit`` hooks, once per process for every live sink.
* ``sink`` — ``LokiSink``: ``emit``, the collector and sender threads, start, restart and shutdown.

Why not ``loki-logger-handler``: measured (1.1.2, see FIELD-NOTES) it has no HTTP timeout (a hung Loki blocks its
flush thread forever while its unbounded queue grows by ~78 MiB per 100k records), drops the whole batch on any
error (0 of 1000 records after a 3 s 503 outage; no retry, no spool, no 400 isolation), flushes only at ``atexit``
(lost on SIGTERM and on ``os._exit``, which is how taskiq worker children exit), keys streams by joined label
values (records get the wrong labels), silently drops records with a non-string label value, and imports
``requests`` without declaring it. Its payload shape is fine; its transport is what we need, so this package is a
small transport of our own on ``httpx`` (already a dependency).
"""

from taskiq_monitor.sinks.loki.format import (
    PUSH_PATH,
    Batch,
    PushEntry,
    decode_push,
    encode_push,
    gzip_body,
    retry_after_seconds,
)
from taskiq_monitor.sinks.loki.sink import LokiSink
from taskiq_monitor.sinks.loki.spool import Spool, default_spool_dir

__all__ = [
    "PUSH_PATH",
    "Batch",
    "LokiSink",
    "PushEntry",
    "Spool",
    "decode_push",
    "default_spool_dir",
    "encode_push",
    "gzip_body",
    "retry_after_seconds",
]
