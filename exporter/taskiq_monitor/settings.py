"""All configuration of taskiq-monitor, in one place.

Every value comes from the environment (prefix ``TASKIQ_MONITOR_``) or from the CLI flags that override it; no
other module reads the environment. Example::

    TASKIQ_MONITOR_PORT=9900 TASKIQ_MONITOR_BEARER_TOKEN=s3cret taskiq-monitor serve
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Background tasks run from milliseconds (a cache write) to tens of minutes (a re-index or an LLM extraction);
# the web-request defaults of prometheus_client (5 ms – 10 s) put every long task into +Inf. Roughly ×2.5 steps
# keep the quantile error under ~25 % across the whole range with 18 buckets.
DEFAULT_DURATION_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1200.0,
    1800.0,
)
# Queue wait ranges from "picked up at once" to "the backlog took an hour to drain".
DEFAULT_QUEUE_WAIT_BUCKETS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)

ENV_PREFIX = "TASKIQ_MONITOR_"
DEFAULT_PORT = 9808


class Settings(BaseSettings):
    """taskiq-monitor settings; see the README's configuration table for every variable."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", populate_by_name=True)

    # --- exporter service -------------------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the exporter binds to; loopback unless told otherwise.")
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="Port of the exporter's HTTP/WebSocket server.")
    bearer_token: SecretStr | None = Field(
        None, description="When set, /metrics, /api and /ws require 'Authorization: Bearer <token>'."
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
        300, ge=60, le=86400, description="Window of success rate and average duration in GET /api/v1/tasks."
    )
    live_client_queue: int = Field(
        10_000, ge=1, description="Events queued per WebSocket client; a client that falls further behind is closed."
    )
    live_ping_seconds: float = Field(15.0, gt=0, description="Interval of ping frames on an idle WebSocket.")
    live_max_message_bytes: int = Field(4096, ge=64, description="Largest message a WebSocket client may send.")

    # --- demo -------------------------------------------------------------------------------------------------------
    demo_broker_url: str | None = Field(
        None, description="Broker of the demo tasks: unset = in-memory; redis://… = a real Redis broker."
    )
    demo_broker_kind: str = Field("list", pattern="^(list|stream)$", description="Redis broker flavour: list|stream.")
    demo_queue_name: str = Field("taskiq_monitor_demo", description="Redis list/stream name of the demo broker.")

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
