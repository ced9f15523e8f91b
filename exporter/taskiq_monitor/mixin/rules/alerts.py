"""Alerting rules: CamelCase ``Taskiq*`` names, ``for:``, ``severity``, a static summary, a templated description,
``runbook_url`` (an anchor of docs/runbook.md) and ``dashboard_url`` (the fixed dashboard uids of the config).

Alert expressions read the raw metrics, not recorded series: Prometheus evaluates rule groups independently, so an
alert on a recorded series would lag by up to one evaluation, at random. Ratios and means are the shared
expressions of :mod:`taskiq_monitor.mixin.promql`, the ones the dashboards colour with the same thresholds.
"""

from __future__ import annotations

import re
from typing import Any

from taskiq_monitor.mixin import promql
from taskiq_monitor.mixin.config import Config, duration_seconds


def _fmt_number(value: float) -> str:
    return f"{value:g}"


def _pct(value: float) -> str:
    return f"{value * 100:g}%"


def _task_dashboard(cfg: Config) -> str:
    return f"{cfg.grafana_url}/d/{cfg.task_detail_uid}?var-task_name={{{{ $labels.task_name }}}}"


def _overview_dashboard(cfg: Config) -> str:
    return f"{cfg.grafana_url}/d/{cfg.overview_uid}"


def _alert(
    cfg: Config,
    name: str,
    expr: str,
    for_: str,
    severity: str,
    summary: str,
    description: str,
    dashboard_url: str,
) -> dict[str, Any]:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": f"{cfg.runbook_url}#{name.lower()}",
            "dashboard_url": dashboard_url,
        },
    }


def alerting_rules(cfg: Config) -> list[dict[str, Any]]:
    sel = cfg.selector
    fw = cfg.failure_ratio_window
    rw = cfg.retry_window
    uw = cfg.stuck_usual_window
    sw = cfg.stuck_window
    bw = cfg.backlog_growth_window
    history_count_evictions = promql.series(promql.HISTORY_EVICTED, sel, 'reason="count"')
    timeout_re = "|".join(re.escape(t) for t in cfg.timeout_error_types)
    task_alerts = [
        _alert(
            cfg,
            "TaskiqTaskHighFailureRate",
            (
                f"{promql.failure_ratio(sel, fw)}\n"
                f"> {_fmt_number(cfg.failure_ratio_threshold)}\n"
                f"and on (task_name)\n"
                f"{promql.finished(sel, fw)} >= {cfg.failure_min_volume}\n"
            ),
            cfg.failure_for,
            "critical",
            "A TaskIQ task type fails too often.",
            (
                "{{ $value | humanizePercentage }} of {{ $labels.task_name }} tasks failed over the last "
                f"{fw} (threshold {_pct(cfg.failure_ratio_threshold)}, "
                f"at least {cfg.failure_min_volume} finished)."
            ),
            _task_dashboard(cfg),
        ),
        _alert(
            cfg,
            "TaskiqTaskRetryStorm",
            (
                f"{promql.retry_ratio(sel, rw)}\n"
                f"> {_fmt_number(cfg.retry_ratio_threshold)}\n"
                f"and on (task_name)\n"
                f"{promql.completed('retried', sel, rw)} >= {cfg.retry_min_volume}\n"
            ),
            cfg.retry_for,
            "warning",
            "A TaskIQ task type is being retried in a storm.",
            (
                "{{ $value | humanizePercentage }} of {{ $labels.task_name }} attempts ended in a retry over "
                f"the last {rw} (threshold {_pct(cfg.retry_ratio_threshold)})."
            ),
            _task_dashboard(cfg),
        ),
        _alert(
            cfg,
            "TaskiqQueueBacklogGrowing",
            (
                f"{promql.pending(sel)} > {cfg.backlog_min_pending}\n"
                f"and on (task_name)\n"
                f"max by (task_name) (deriv({promql.series(promql.PENDING, sel)}[{bw}])) > 0\n"
            ),
            cfg.backlog_for,
            "warning",
            "The TaskIQ backlog of a task type keeps growing.",
            (
                "{{ $value }} {{ $labels.task_name }} tasks are pending and the backlog has been growing "
                f"for {cfg.backlog_for} (threshold {cfg.backlog_min_pending})."
            ),
            _task_dashboard(cfg),
        ),
        _alert(
            cfg,
            "TaskiqOldestPendingTooOld",
            f"{promql.oldest_pending_age(sel)} > {cfg.oldest_pending_max_age_seconds}",
            cfg.oldest_pending_for,
            "warning",
            "A TaskIQ task has been waiting in the queue for too long.",
            (
                "The oldest pending {{ $labels.task_name }} task has waited {{ $value | humanizeDuration }} "
                f"(threshold {cfg.oldest_pending_max_age_seconds}s)."
            ),
            _task_dashboard(cfg),
        ),
        _alert(
            cfg,
            "TaskiqTaskStuck",
            (
                f"({promql.running(sel)} > 0)\n"
                f"unless on (task_name)\n"
                f"({promql.total(promql.COMPLETED, sel, sw, fn='increase')} > 0)\n"
                f"and on (task_name)\n"
                f"({promql.mean_duration(sel, uw)} * {_fmt_number(cfg.stuck_factor)}"
                f" < {_fmt_number(duration_seconds(sw))})\n"
            ),
            cfg.stuck_for,
            "warning",
            "TaskIQ tasks run far beyond their usual duration.",
            (
                "{{ $value }} {{ $labels.task_name }} task(s) are running and none has finished in "
                f"{cfg.stuck_window}, more than {_fmt_number(cfg.stuck_factor)}x the usual "
                f"({cfg.stuck_usual_window} mean) duration."
            ),
            _task_dashboard(cfg),
        ),
        _alert(
            cfg,
            "TaskiqTaskTimeoutsSpike",
            (
                promql.total(promql.ERRORS, sel, cfg.timeout_window, extra=f'error_type=~"{timeout_re}"', fn="increase")
                + f" >= {cfg.timeout_min_count}"
            ),
            cfg.timeout_for,
            "warning",
            "TaskIQ tasks are timing out.",
            (
                "{{ $value | humanize }} {{ $labels.task_name }} tasks timed out in the last "
                f"{cfg.timeout_window} (threshold {cfg.timeout_min_count})."
            ),
            _task_dashboard(cfg),
        ),
    ]
    system_alerts = [
        _alert(
            cfg,
            "TaskiqNoWorkerAlive",
            f"{promql.workers(sel)} < 1",
            cfg.no_worker_for,
            "critical",
            "No TaskIQ worker is alive.",
            (
                "{{ $value }} TaskIQ worker processes alive (by heartbeat) for "
                f"{cfg.no_worker_for}; queued tasks are not processed."
            ),
            _overview_dashboard(cfg),
        ),
        _alert(
            cfg,
            "TaskiqExporterDown",
            f"up{{{sel}}} == 0",
            cfg.exporter_down_for,
            "critical",
            "A TaskIQ metrics endpoint cannot be scraped.",
            (
                "Prometheus has failed to scrape {{ $labels.instance }} (job {{ $labels.job }}) for "
                f"{cfg.exporter_down_for}; its tasks are not monitored."
            ),
            _overview_dashboard(cfg),
        ),
        _alert(
            cfg,
            "TaskiqLogShippingDropping",
            f"{promql.dropped(promql.LOG_RECORDS, sel, cfg.log_drop_window)} > 0",
            cfg.log_drop_for,
            "warning",
            "TaskIQ task event logs are being dropped before reaching Loki.",
            (
                "{{ $labels.instance }} dropped {{ $value | humanize }} log records in the last "
                f"{cfg.log_drop_window}; task history in Loki has gaps."
            ),
            _overview_dashboard(cfg),
        ),
        _alert(
            cfg,
            "TaskiqStateStoreDown",
            f"{promql.series(promql.STATE_UP, sel)} == 0",
            cfg.state_store_down_for,
            "warning",
            "A TaskIQ exporter cannot read the shared task state.",
            (
                "{{ $labels.instance }} (job {{ $labels.job }}) has not read the shared task state (Redis) for "
                f"{cfg.state_store_down_for}: its queue depth, oldest pending age and worker count are missing, "
                "so the backlog and no-worker alerts cannot fire from it, and its live feed is stalled."
            ),
            _overview_dashboard(cfg),
        ),
        _alert(
            cfg,
            "TaskiqLiveStateDropping",
            f"{promql.dropped(promql.STATE_EVENTS, sel, cfg.state_drop_window)} > 0",
            cfg.state_drop_for,
            "warning",
            "TaskIQ task state events are being dropped before reaching the state store.",
            (
                "{{ $labels.instance }} dropped {{ $value | humanize }} task state events in the last "
                f"{cfg.state_drop_window} (state store unreachable, buffer full); the live feed has gaps and "
                "queue depth may be off until the state resynchronises."
            ),
            _overview_dashboard(cfg),
        ),
        _alert(
            cfg,
            "TaskiqHistoryEvictingByCount",
            (
                # Queue-wide: every exporter sharing the Redis reports the same count, hence max.
                f"max(increase({history_count_evictions}[{cfg.history_evict_window}])) > 0"
            ),
            cfg.history_evict_for,
            "warning",
            "The TaskIQ execution history is capped below its retention period.",
            (
                "{{ $value | humanize }} executions were deleted from the history by its cap "
                f"(TASKIQ_MONITOR_HISTORY_MAX_EXECUTIONS) in the last {cfg.history_evict_window}, before the "
                "retention (TASKIQ_MONITOR_HISTORY_RETENTION_DAYS) expired them: the history holds less than "
                "the retention period."
            ),
            _overview_dashboard(cfg),
        ),
    ]
    return [
        {"name": "taskiq.alerts.tasks", "rules": task_alerts},
        {"name": "taskiq.alerts.system", "rules": system_alerts},
    ]
