"""All configuration of taskiq-monitor, in one place.

Every value comes from the environment (prefix ``TASKIQ_MONITOR_``) or from the CLI flags that override it; no
other module reads the environment. Example::

    TASKIQ_MONITOR_PORT=9900 TASKIQ_MONITOR_BEARER_TOKEN=s3cret taskiq-monitor serve
"""

from __future__ import annotations

import difflib
import logging
import os
import urllib.parse
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from taskiq_monitor.errors import ConfigError
from taskiq_monitor.events import EVENT_STATUSES
from taskiq_monitor.redaction import (
    DEFAULT_MAX_FIELD_BYTES,
    DEFAULT_MAX_RECORD_BYTES,
    DEFAULT_REDACT_KEYS,
    mask_url_credentials,
)

# Background tasks run from milliseconds (a cache write) to tens of minutes (a re-index or an LLM extraction);
# the web-request defaults of prometheus_client (5 ms – 10 s) put every long task into +Inf. Roughly ×2.5 steps
# keep the quantile error under ~25 % across the whole range with 18 buckets.
# fmt: off
DEFAULT_DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
)
# Queue wait ranges from "picked up at once" to "the backlog took an hour to drain".
DEFAULT_QUEUE_WAIT_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)
# fmt: on

ENV_PREFIX = "TASKIQ_MONITOR_"

logger = logging.getLogger(__name__)
DEFAULT_PORT = 9808


HTTP_URL_SCHEMES = ("http://", "https://")
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")


def _url(value: str | None, schemes: tuple[str, ...], problem: str, strip_slash: bool = False) -> str | None:
    """A URL setting: blank is unset; else stripped of white space (and of trailing ``/`` with ``strip_slash``) and
    checked to start with one of ``schemes``. ``problem`` never repeats the value: it may carry a password."""
    if value is None or not value.strip():
        return None
    value = value.strip().rstrip("/") if strip_slash else value.strip()
    if not value.startswith(schemes):
        raise ValueError(problem)
    try:
        urllib.parse.urlsplit(value).port  # noqa: B018  # raises on a port that is no number in 0..65535
    except ValueError as exc:  # its message names the port or the bracket, never the password
        raise ValueError(f"is not a valid URL: {exc}") from None
    return value


# A value starting with one of these is JSON; a key fragment or a status never does.
JSON_OPENERS = ("[", "{", '"')


def _json_string_list(text: str) -> list[str]:
    """``text`` parsed as a JSON list of strings, else ``ValueError`` saying what it is instead."""
    import json

    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"is not valid JSON ({exc.msg} at character {exc.pos}); use a JSON list or commas") from None
    if not isinstance(value, list):
        kinds = {dict: "object", str: "string", bool: "boolean", int: "number", float: "number"}
        kind = kinds.get(type(value), "null")
        raise ValueError(f"must be a JSON list of strings or comma-separated, not a JSON {kind}")
    if not all(isinstance(item, str) for item in value):
        raise ValueError("must be a JSON list of strings: every item in quotes")
    return value


# Variables of the deployment, not of a process: docker-compose.yml reads them from .env, and a user who exports .env
# into a shell (``set -a; . ./.env``) runs the CLI with them set. Not a typo, so not warned about.
DEPLOYMENT_VARIABLES = frozenset({ENV_PREFIX + "IMAGE_TAG"})


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``TASKIQ_MONITOR_*`` variables of ``environ`` that set nothing (a typo, or a removed setting), sorted."""
    known = {ENV_PREFIX + name.upper() for name in Settings.model_fields} | DEPLOYMENT_VARIABLES
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            known.update(str(choice).upper() for choice in alias.choices)
    return sorted(name for name in environ if name.upper().startswith(ENV_PREFIX) and name.upper() not in known)


class Settings(BaseSettings):
    """taskiq-monitor settings; see the README's configuration table for every variable."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True)

    # --- exporter service -------------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the exporter binds to; loopback unless told otherwise.")
    # No 0 ("any free port"): the printed addresses and the default metrics directory (one per port) name the port,
    # and two supervisors on port 0 would share, and fight over, /tmp/taskiq-monitor-<uid>-0.
    port: int = Field(DEFAULT_PORT, ge=1, le=65535, description="Port of the exporter's HTTP/WebSocket server.")
    bearer_token: SecretStr | None = Field(
        None,
        description="When set, /metrics, /api and /ws require 'Authorization: Bearer <token>' (or the session cookie). "
        "Printable ASCII without spaces: it travels in an HTTP header.",
    )
    allowed_hosts: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Extra host names the exporter answers to, comma-separated (e.g. a reverse proxy's "
        "monitor.example.com; '*' = any Host). Requests arriving on a loopback address are answered only for "
        "localhost, IP addresses and these names (DNS rebinding protection); on other addresses for any Host, unless "
        "this is set. Pages served under these names may also open the live feed (WebSocket Origin check).",
    )
    metrics_dir: Path | None = Field(
        None,
        validation_alias=AliasChoices(f"{ENV_PREFIX}METRICS_DIR", "PROMETHEUS_MULTIPROC_DIR"),
        description="prometheus_client multiprocess directory shared by the worker processes of a host.",
    )

    # --- metrics --------------------------------------------------------------------------------------------------
    duration_buckets: tuple[float, ...] = Field(DEFAULT_DURATION_BUCKETS, description="Task duration buckets (s).")
    queue_wait_buckets: tuple[float, ...] = Field(DEFAULT_QUEUE_WAIT_BUCKETS, description="Queue wait buckets (s).")
    max_task_names: int = Field(
        100, ge=0, description="Unregistered task names tracked before folding into task_name='other'."
    )
    max_error_types: int = Field(50, ge=1, description="Error types per process before folding into 'other'.")

    # --- identity of the records ----------------------------------------------------------------------------------
    service_name: str = Field("taskiq", min_length=1, description="service_name label of logs and events.")
    env: str | None = Field(None, description="Optional env label (e.g. prod, staging) on logs and events.")

    # --- event records (every sink) ---------------------------------------------------------------------------
    redact_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        DEFAULT_REDACT_KEYS,
        description="Key fragments whose values are replaced by [REDACTED] in args/kwargs/labels (case-insensitive "
        "substring match); comma-separated or a JSON list. Prefix with '+' to extend the defaults: '+iban,pin'.",
    )
    event_max_field_bytes: int = Field(
        DEFAULT_MAX_FIELD_BYTES, ge=256, description="Cap of one record field (args, kwargs, labels, traceback…)."
    )
    event_max_record_bytes: int = Field(
        DEFAULT_MAX_RECORD_BYTES, ge=1024, description="Cap of a record's free-form fields together."
    )
    events_coalesce: bool = Field(
        True,
        description="An attempt that finishes before the state store's or Loki's thread has taken its 'running' "
        "event is recorded by that sink as its final event only (which carries the start time, queue wait and "
        "parameters): half the records for short tasks. false: every state change is its own record.",
    )

    # --- loki -------------------------------------------------------------------------------------------------------
    loki_url: str | None = Field(
        None,
        description="Loki base URL (e.g. http://loki:3100); when set, task events (of loki_statuses) are shipped.",
    )
    loki_shipper: Literal["worker", "exporter"] = Field(
        "worker",
        description="Who pushes the task events to Loki. worker: each worker process, from its own threads (with a "
        "disk spool for outages). exporter: the exporter, from the Redis event stream the workers already write "
        "(needs redis_url; workers then pay for one sink instead of two, and the stream is the outage buffer). Set "
        "it alike for the workers and the exporter.",
    )
    loki_statuses: Annotated[tuple[str, ...], NoDecode] = Field(
        tuple(str(status) for status in EVENT_STATUSES),
        description="Statuses of the events shipped to Loki, comma-separated (default: all). E.g. 'failed,retried' "
        "ships failures only, for a fraction of the shipping CPU and of Loki's volume; the state store, the live feed "
        'and the history still get every event. A JSON list works too: ["failed", "retried"].',
    )
    loki_batch_max_records: int = Field(1000, ge=1, description="Records per push at most.")
    loki_batch_max_bytes: int = Field(
        1024 * 1024, ge=1024, description="Uncompressed JSON bytes per push at most (Loki's default burst is 6 MB)."
    )
    loki_batch_wait_seconds: float = Field(1.0, gt=0, description="Longest time a record waits for its batch.")
    loki_compression: Literal["gzip", "none"] = Field(
        "gzip",
        description="Content-Encoding of pushes: gzip (~10x fewer bytes on the wire) or none (saves the worker ~2 µs "
        "of CPU per record; for a Loki on the same host or network). Spooled batches are gzip either way.",
    )
    loki_connect_timeout_seconds: float = Field(3.0, gt=0, description="HTTP connect timeout of a push.")
    loki_timeout_seconds: float = Field(10.0, gt=0, description="HTTP read/write timeout of a push.")
    loki_retries: int = Field(
        3, ge=0, description="Retries of a batch (backoff with jitter) before it is spooled to disk."
    )
    loki_backoff_initial_seconds: float = Field(0.5, gt=0, description="First retry delay; doubles per retry.")
    loki_backoff_max_seconds: float = Field(
        10.0, gt=0, description="Longest delay between retries and between probes of a Loki that is down."
    )
    loki_queue_max_records: int = Field(
        20_000,
        ge=100,
        description="In-memory queue bound (records not serialised yet); when full (the shipper's thread cannot keep "
        "up), new records are dropped and counted.",
    )
    loki_spool_dir: Path | None = Field(
        None, description="Directory of the on-disk spool (default: <tmp>/taskiq-monitor-loki-spool-<uid>)."
    )
    loki_spool_max_bytes: int = Field(
        256 * 1024 * 1024, ge=0, description="Spool size cap (all processes); records beyond it are dropped."
    )
    loki_flush_timeout_seconds: float = Field(
        3.0, ge=0, description="Shutdown flush budget; then the rest is spooled (taskiq's shutdown_timeout is 5 s)."
    )
    loki_username: str | None = Field(None, description="Basic-auth user for Loki (with loki_password).")
    loki_password: SecretStr | None = Field(None, description="Basic-auth password for Loki.")
    loki_bearer_token: SecretStr | None = Field(None, description="Bearer token for Loki (instead of basic auth).")
    loki_tenant_id: str | None = Field(None, description="X-Scope-OrgID header (multi-tenant Loki).")

    # --- state & live feed -------------------------------------------------------------------------------------
    redis_url: str | None = Field(
        None,
        description="Redis holding the shared task state (pending/running/workers) and the event stream of the live "
        "feed; unset = an in-process store (only useful when tasks and exporter share a process, e.g. the demo).",
    )
    state_key_prefix: str = Field(
        "taskiq_monitor",
        min_length=1,
        pattern=r"^[^{}\s]+$",
        description="Prefix of every Redis key (wrapped in a {hash tag}: all keys live in one cluster slot).",
    )
    state_buffer_events: int = Field(
        10_000, ge=1, description="Events a process buffers in memory for Redis; beyond it they are dropped (counted)."
    )
    state_batch_events: int = Field(500, ge=1, description="Events written per Redis round trip (one pipeline).")
    state_flush_interval_seconds: float = Field(
        0.01,
        gt=0,
        le=1,
        description="While events flow, how often the state flusher writes what is buffered: each event reaches the "
        "live feed at most this much later, and the task's loop never wakes the flusher event by event.",
    )
    stream_max_events: int = Field(
        100_000, ge=1, description="Approximate length of the capped event stream: the live feed's resume window."
    )
    pending_horizon_seconds: float = Field(
        6 * 3600.0,
        gt=0,
        description="Pending entries older than this (a lost message) are expired and counted in "
        "taskiq_tasks_pending_expired_total.",
    )
    heartbeat_seconds: float = Field(5.0, gt=0, description="Interval of worker heartbeats.")
    worker_ttl_seconds: float = Field(
        15.0, gt=0, description="A worker whose last heartbeat is older than this is gone (its running tasks too)."
    )
    reorder_window_seconds: float = Field(
        120.0,
        gt=0,
        description="How long a started task is remembered so that its late-arriving 'pending' event (from another "
        "process) does not re-add it.",
    )
    stats_window_seconds: int = Field(
        86400,
        ge=60,
        le=86400,
        description="Window of success rate and average duration in GET /api/v1/tasks (FR-014: 24 h), and the "
        "longest history of GET /api/v1/tasks/series.",
    )
    history_enabled: bool = Field(
        True, description="Keep the execution history (GET /api/v1/executions) in the state store."
    )
    history_retention_days: float = Field(
        30.0, gt=0, le=3650, description="Executions older than this are deleted (in the background)."
    )
    history_max_executions: int = Field(
        2_000_000,
        ge=1,
        description="Cap on the executions kept; the oldest are evicted first (counted in "
        'taskiq_monitor_history_evicted_total{reason="count"}). The in-process store keeps at most 20 000.',
    )
    live_client_queue: int = Field(
        10_000, ge=1, description="Events queued per WebSocket client; a client that falls further behind is closed."
    )
    live_batch_seconds: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Longest tick of the live feed: events due to a WebSocket client are sent together, once per tick "
        "(protocol v2: one frame per tick). The tick is 50 µs per connected client, at most this; 0 = no pacing.",
    )
    live_compression: bool = Field(
        False,
        description="Per-message deflate on the live feed, for clients that offer it (browsers do): each batch is "
        "compressed once for all clients of a filter group (v2: ~16x fewer bytes, for viewers on slow links). Off: "
        "nothing is compressed (on one host the copies are cheaper than the compression).",
    )
    live_ping_seconds: float = Field(15.0, gt=0, description="Interval of ping frames on an idle WebSocket.")
    live_max_message_bytes: int = Field(4096, ge=64, description="Largest message a WebSocket client may send.")

    # --- web dashboard --------------------------------------------------------------------------------------------
    grafana_url: str | None = Field(
        None,
        description="Grafana's address (e.g. http://localhost:3000); when set, the dashboard's error detail links "
        "to the Loki query and the trace of the task in Grafana Explore.",
    )

    # --- demo -------------------------------------------------------------------------------------------------------
    demo_broker_url: str | None = Field(
        None, description="Broker of the demo tasks: unset = in-memory; redis://… = a real Redis broker."
    )
    demo_broker_kind: str = Field("list", pattern="^(list|stream)$", description="Redis broker flavour: list|stream.")
    demo_queue_name: str = Field("taskiq_monitor_demo", description="Redis list/stream name of the demo broker.")

    # --- tracing ----------------------------------------------------------------------------------------------------
    otlp_endpoint: str | None = Field(
        None,
        description="OTLP/HTTP endpoint of the trace backend (e.g. http://tempo:4318); when set, "
        "taskiq_monitor.tracing.setup_tracing() exports spans there (needs the [tracing] extra).",
    )
    trace_sample_ratio: float = Field(
        1.0, ge=0.0, le=1.0, description="Share of new traces recorded (parent-based: a sampled parent is followed)."
    )

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # URLs may carry credentials (loki_url, demo_broker_url…): masked in repr()/str(), the values stay intact.
        for name, value in super().__repr_args__():
            yield name, mask_url_credentials(value) if isinstance(value, str) else value

    @field_validator("redact_keys", mode="before")
    @classmethod
    def _parse_keys(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith(JSON_OPENERS):
                # JSON, and then only a list of strings: '{"a": 1}' taken as the one key '{"a":1}' would redact
                # nothing the user meant, silently.
                value = _json_string_list(text)
            else:
                extend = text.startswith("+")
                keys = tuple(k.strip() for k in text.lstrip("+").split(",") if k.strip())
                value = DEFAULT_REDACT_KEYS + keys if extend else keys
        return value

    @field_validator("allowed_hosts", mode="before")
    @classmethod
    def _parse_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")  # not JSON: "[::1]" is a host name
        if not isinstance(value, list | tuple | set | frozenset):
            return value  # pydantic names the type error
        hosts: list[str] = []
        for entry in (str(h).strip().lower().rstrip(".") for h in value if str(h).strip()):
            # Names only: a Host or Origin is matched by its host name, whatever the scheme and port.
            bracketed = entry.startswith("[") and entry.endswith("]")
            name = entry[1:-1] if bracketed else entry
            if any(char in name for char in "/@[] ") or (name.count(":") == 1 and not bracketed):
                raise ValueError(
                    f"{entry!r} is not a host name: list names without scheme, port or path, e.g. monitor.example.com"
                )
            hosts.append(name)
        return tuple(dict.fromkeys(hosts))

    @field_validator("bearer_token", "loki_bearer_token")
    @classmethod
    def _header_safe_token(cls, value: SecretStr | None) -> SecretStr | None:
        # The token travels in "Authorization: Bearer <token>": a header value is latin-1 at best, and a space or a
        # control character would be cut or rejected on the way. The message never repeats the token.
        # An empty token would be matched by a bare "Bearer ": unset the variable to turn authentication off. Loki's
        # too: a bare "Bearer " (an empty variable in a compose file) was sent, refused, and every record spooled.
        token = value.get_secret_value() if value is not None else None
        if token is not None and not (token and all("!" <= char <= "~" for char in token)):
            raise ValueError(
                "must be one or more printable ASCII characters without spaces (it is sent in an HTTP header)"
            )
        return value

    @field_validator("loki_statuses", mode="before")
    @classmethod
    def _parse_statuses(cls, value: Any) -> Any:
        if isinstance(value, str):
            # The configuration reference says list values are JSON; a comma list is the short form.
            value = _json_string_list(value) if value.strip().startswith(JSON_OPENERS) else value.split(",")
        if not isinstance(value, list | tuple | set | frozenset):
            return value  # pydantic names the type error
        known = [str(status) for status in EVENT_STATUSES]
        statuses = tuple(dict.fromkeys(str(s).strip().lower() for s in value if str(s).strip()))
        unknown = [s for s in statuses if s not in known]
        if unknown:
            raise ValueError(f"unknown status {', '.join(map(repr, unknown))}: each must be one of {', '.join(known)}")
        if not statuses:
            raise ValueError(f"name at least one of {', '.join(known)} (to ship nothing, leave loki_url unset)")
        return statuses

    @field_validator("loki_url", "grafana_url", "otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        # "grafana:3000" would otherwise become broken links (the dashboard) or an exporter that never connects
        # (tracing), found long after start-up.
        return _url(value, HTTP_URL_SCHEMES, "must be an http:// or https:// URL", strip_slash=True)

    @field_validator("metrics_dir", "loki_spool_dir", mode="before")
    @classmethod
    def _blank_dir_is_unset(cls, value: Any) -> Any:
        # An empty variable is unset, like the URLs: Path("") is the current directory, which would be claimed (or
        # filled with spool files).
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("redis_url", "demo_broker_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        return _url(
            value, REDIS_URL_SCHEMES, "must be a redis://, rediss:// or unix:// URL, e.g. redis://localhost:6379/0"
        )

    @field_validator("duration_buckets", "queue_wait_buckets")
    @classmethod
    def _buckets_sorted(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(b <= 0 for b in value) or list(value) != sorted(set(value)):
            raise ValueError("buckets must be a non-empty, strictly increasing list of positive numbers")
        return value

    @model_validator(mode="after")
    def _heartbeat_within_ttl(self) -> Settings:
        if self.worker_ttl_seconds <= self.heartbeat_seconds:
            raise ValueError("worker_ttl_seconds must be longer than heartbeat_seconds (e.g. 3x)")
        return self

    @model_validator(mode="after")
    def _exporter_ships_from_redis(self) -> Settings:
        if self.loki_url and self.loki_shipper == "exporter" and not self.redis_url:
            raise ValueError(
                "loki_shipper=exporter needs redis_url: the exporter ships the events the workers write to Redis"
            )
        return self

    @property
    def workers_ship_to_loki(self) -> bool:
        """Whether this process's middleware ships its task events to Loki itself."""
        return bool(self.loki_url) and self.loki_shipper == "worker"

    @property
    def exporter_ships_to_loki(self) -> bool:
        """Whether the exporter runs the Loki relay (``service/loki_relay.py``)."""
        return bool(self.loki_url) and self.loki_shipper == "exporter"  # with redis_url: the validator sees to it


def _known_variables() -> list[str]:
    return [ENV_PREFIX + name.upper() for name in Settings.model_fields]


def load_settings(**overrides: Any) -> Settings:
    """The settings from the environment, with every override that is not None (a CLI flag) on top.

    An invalid value raises :class:`~taskiq_monitor.errors.ConfigError` naming each bad field in one line (exit
    code 2 in the CLI), instead of pydantic's multi-line report.
    """
    for name in unknown_variables(os.environ):
        # Not an error (an older or newer version's variable must not stop a process), but never silent: a typo in
        # TASKIQ_MONITOR_BEARER_TOKEN would otherwise leave the exporter open.
        close = difflib.get_close_matches(name.upper(), _known_variables(), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        logger.warning("taskiq-monitor: %s is no setting and is ignored%s", name, hint)
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        # A list variable that is not JSON (TASKIQ_MONITOR_DURATION_BUCKETS=1,2,3): pydantic-settings' own error.
        raise ConfigError(f"invalid configuration: {exc}; list values are JSON, e.g. [0.1, 1, 5]") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from None
