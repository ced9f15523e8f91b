"""The one configuration of the monitoring mixin: selectors, dashboard uids, tags, windows, thresholds, links.

Everything the dashboards (``taskiq_monitor.mixin.dashboards``) and the Prometheus rules
(``taskiq_monitor.mixin.rules``) need to agree on is a field here, so a threshold is set once and the alert, the
dashboard colour and the web UI's health badge move together. Standard library only: the exporter imports this
module at run time (the web UI derives healthy / degraded / failing from the thresholds), while the generators'
dependencies (grafana-foundation-sdk, PyYAML) are development-only.

Change a default here, then regenerate the committed files::

    python grafana/generate.py && python prometheus/rules/generate.py

or build a variant without touching the defaults (the end-to-end alerting test does this with short windows)::

    from dataclasses import replace
    from taskiq_monitor.mixin.config import CONFIG
    fast = replace(CONFIG, failure_ratio_window="10s", failure_for="2s")
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

__all__ = ["CONFIG", "Config", "duration_seconds"]


@dataclass(frozen=True)
class Config:
    """Selectors, uids, tags, windows, thresholds and links shared by the dashboards, the rules and the web UI.

    Health of a task type, as the dashboards colour it and the web UI badges it: *failing* when its success ratio is
    below ``success_ratio_warning`` (the failure-ratio alert's line, ``1 - failure_ratio_threshold``), *degraded*
    below ``success_ratio_ok`` or with more than ``backlog_min_pending`` pending or the oldest pending older than
    ``oldest_pending_max_age_seconds``, *healthy* otherwise.
    """

    # --- selectors ------------------------------------------------------------------------------------------------
    # Worker exporters are scraped as job="taskiq", the app side (where .kiq() runs) as job="taskiq-app".
    selector: str = 'job=~"taskiq|taskiq-app"'
    # Dashboards: the same series, narrowed by the $job and $task_name template variables.
    dashboard_job_selector: str = 'job=~"$job"'
    dashboard_selector: str = 'job=~"$job", task_name=~"$task_name"'
    # Loki streams are selected only by the stream labels the shipper sends (service_name, task_name, status, env).
    loki_selector: str = 'service_name="$service_name", task_name=~"$task_name"'

    # --- dashboards -----------------------------------------------------------------------------------------------
    # Fixed uids: alert dashboard_url annotations and the links between dashboards depend on them.
    overview_uid: str = "taskiq-overview"
    task_detail_uid: str = "taskiq-task-detail"
    live_uid: str = "taskiq-live"
    history_uid: str = "taskiq-history"
    tags: tuple[str, ...] = ("taskiq",)
    # Datasource uids provisioned in grafana/provisioning/datasources/datasources.yaml.
    prometheus_datasource_uid: str = "prometheus"
    loki_datasource_uid: str = "loki"
    tempo_datasource_uid: str = "tempo"
    # Grafana's default [dashboards] min_refresh_interval is 5s: a shorter entry would be clamped.
    # For 1s, set GF_DASHBOARDS_MIN_REFRESH_INTERVAL=1s and add "1s" here (docs/dashboards.md).
    refresh_intervals: tuple[str, ...] = ("5s", "10s", "30s", "1m", "5m", "15m", "30m", "1h", "2h", "1d")

    # --- links ----------------------------------------------------------------------------------------------------
    # Grafana base URL used in every dashboard_url annotation (the only place it is spelled).
    grafana_url: str = "http://localhost:3000"
    # Where docs/runbook.md is readable; the anchor is the lowercased alert name.
    runbook_url: str = "docs/runbook.md"

    # --- windows --------------------------------------------------------------------------------------------------
    # Recording rules: throughput, success/failure ratio and mean duration (FR-013/FR-014 use the 24h one).
    ratio_windows: tuple[str, ...] = ("5m", "1h", "24h")
    # Window and quantiles of the duration / queue-wait histogram quantile recording rules.
    quantile_window: str = "5m"
    quantiles: tuple[float, ...] = (0.5, 0.95, 0.99)
    # Dashboards: the success rate and average duration shown per task type (FR-013/FR-014).
    health_window: str = "24h"

    # --- health colours (dashboards, web UI) ----------------------------------------------------------------------
    # Success ratio below this is red / failing: the failure-ratio alert's line (1 - failure_ratio_threshold).
    success_ratio_warning: float = 0.9
    # Success ratio at or above this is green / healthy; between the two, orange / degraded.
    success_ratio_ok: float = 0.99
    # Pending count coloured red (orange from backlog_min_pending).
    backlog_critical_pending: int = 1000
    # Oldest pending age coloured orange (red from oldest_pending_max_age_seconds).
    oldest_pending_warning_seconds: int = 60

    # Alert expressions read the raw metrics, not recorded series: Prometheus evaluates rule groups
    # independently, so an alert on a recorded series would lag by up to one evaluation, at random.

    # --- TaskiqTaskHighFailureRate --------------------------------------------------------------------------------
    failure_ratio_window: str = "5m"
    failure_ratio_threshold: float = 0.10
    failure_min_volume: int = 10  # final outcomes (success+failed) in the window, so 1 of 1 failed won't page
    failure_for: str = "5m"

    # --- TaskiqTaskRetryStorm -------------------------------------------------------------------------------------
    retry_window: str = "5m"
    retry_ratio_threshold: float = 0.5  # retried attempts per started attempt
    retry_min_volume: int = 20  # retried attempts in the window
    retry_for: str = "10m"

    # --- TaskiqQueueBacklogGrowing --------------------------------------------------------------------------------
    backlog_min_pending: int = 100
    backlog_growth_window: str = "15m"
    backlog_for: str = "15m"

    # --- TaskiqOldestPendingTooOld --------------------------------------------------------------------------------
    oldest_pending_max_age_seconds: int = 600
    oldest_pending_for: str = "5m"

    # --- TaskiqTaskStuck ------------------------------------------------------------------------------------------
    # Tasks of a type are running, none of that type finished within stuck_window, and the usual (mean,
    # over stuck_usual_window) duration times stuck_factor is shorter than stuck_window.
    stuck_window: str = "30m"
    stuck_usual_window: str = "24h"
    stuck_factor: float = 4.0
    stuck_for: str = "5m"

    # --- TaskiqTaskTimeoutsSpike ----------------------------------------------------------------------------------
    timeout_error_types: tuple[str, ...] = ("TimeoutError",)
    timeout_window: str = "10m"
    timeout_min_count: int = 5
    timeout_for: str = "5m"

    # --- TaskiqNoWorkerAlive --------------------------------------------------------------------------------------
    no_worker_for: str = "2m"

    # --- TaskiqExporterDown ---------------------------------------------------------------------------------------
    exporter_down_for: str = "2m"

    # --- TaskiqLogShippingDropping --------------------------------------------------------------------------------
    log_drop_window: str = "10m"
    log_drop_for: str = "2m"

    # --- TaskiqStateStoreDown -------------------------------------------------------------------------------------
    state_store_down_for: str = "5m"

    # --- TaskiqLiveStateDropping ----------------------------------------------------------------------------------
    state_drop_window: str = "10m"
    state_drop_for: str = "2m"

    # --- TaskiqHistoryEvictingByCount ---------------------------------------------------------------------------
    # The history cap (TASKIQ_MONITOR_HISTORY_MAX_EXECUTIONS) deletes executions younger than the retention: the
    # history holds less than TASKIQ_MONITOR_HISTORY_RETENTION_DAYS (FR-016). Not urgent, but it does not heal.
    history_evict_window: str = "1h"
    history_evict_for: str = "15m"

    @property
    def dashboard_uids(self) -> tuple[str, ...]:
        return (self.overview_uid, self.task_detail_uid, self.live_uid, self.history_uid)

    def validate(self) -> None:
        """Raise ValueError on a window Prometheus would not parse or thresholds that contradict each other."""
        for field in dataclasses.fields(self):
            if field.name.endswith(("_window", "_for")):
                duration_seconds(getattr(self, field.name))
        for window in self.ratio_windows:
            duration_seconds(window)
        if not 0 < self.success_ratio_warning <= self.success_ratio_ok <= 1:
            raise ValueError("need 0 < success_ratio_warning <= success_ratio_ok <= 1")
        if self.backlog_critical_pending < self.backlog_min_pending:
            raise ValueError("backlog_critical_pending must be >= backlog_min_pending")
        if self.oldest_pending_max_age_seconds < self.oldest_pending_warning_seconds:
            raise ValueError("oldest_pending_max_age_seconds must be >= oldest_pending_warning_seconds")


CONFIG = Config()

_DURATION_RE = re.compile(r"^(\d+)(ms|s|m|h|d|w|y)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


def duration_seconds(value: str) -> float:
    """Seconds of a single-unit Prometheus duration (``5m`` -> 300)."""
    match = _DURATION_RE.match(value)
    if not match:
        raise ValueError(f"unsupported duration {value!r} (use one unit, e.g. 30s, 5m, 24h)")
    return int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
