"""TaskIQ / Task detail: one task type in depth (single-select $task_name): throughput, outcomes, exception types,
retries, latency, recent failures. The health table and the alerts' dashboard_url link here. Ordered queries →
panels → rows.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import bargauge, logs, stat, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models import common as cm

from taskiq_monitor.mixin import promql
from taskiq_monitor.mixin.config import CONFIG
from taskiq_monitor.mixin.dashboards import variables
from taskiq_monitor.mixin.dashboards.panels import (
    FAILED_STEPS,
    RETRIED_STEPS,
    assemble,
    base,
    dashboard_url,
    data_link,
    logs_panel,
    prom,
    prom_ds,
    stat_panel,
    success_rate_stat,
    thresholds,
    ts_panel,
)

# ------------------------------------------------------------------------------------------------------------------
# queries
# ------------------------------------------------------------------------------------------------------------------

SEL = CONFIG.dashboard_selector
HW = CONFIG.health_window
RI = "$__rate_interval"

THROUGHPUT = promql.total(promql.COMPLETED, SEL, "5m", extra=promql.FINAL, by="")
SUCCESS_RATIO = promql.success_ratio(SEL, HW, by="")
FAILED_IN_RANGE = promql.completed("failed", SEL, "$__range", by="")
RETRIED_IN_RANGE = promql.completed("retried", SEL, "$__range", by="")
RUNNING = promql.running(SEL, by="")
PENDING = promql.pending(SEL, by="")
P95_DURATION = promql.quantile(0.95, promql.DURATION, SEL, RI)
COMPLETIONS_BY_STATUS = promql.total(promql.COMPLETED, SEL, RI, by="status")
RETRIED_RATE = promql.total(promql.COMPLETED, SEL, RI, extra='status="retried"', by="")
RETRY_RATIO = promql.retry_ratio(SEL, RI, by="")
ERRORS_BY_TYPE = promql.total(promql.ERRORS, SEL, RI, by="error_type")
ERRORS_IN_RANGE = f"sort_desc({promql.total(promql.ERRORS, SEL, '$__range', by='error_type', fn='increase')})"
FAILURES_LOG = (
    f'{{{CONFIG.loki_selector}, status=~"failed|retried"}} | json'
    ' | line_format "{{.error_type}}: {{.error_message}} task_id={{.task_id}} trace_id={{.trace_id}}"'
)

# ------------------------------------------------------------------------------------------------------------------
# panels
# ------------------------------------------------------------------------------------------------------------------

HISTORY = dashboard_url(CONFIG.history_uid, "var-task_name=${task_name}")


def summary_panels() -> list[stat.Panel]:
    return [
        stat_panel("Throughput", THROUGHPUT, unit="ops", graph=True),
        success_rate_stat(SUCCESS_RATIO, HW),
        stat_panel(
            "Failed (range)",
            FAILED_IN_RANGE,
            w=3,
            decimals=0,
            steps=FAILED_STEPS,
            links=[data_link("Failures in History & errors", HISTORY + "&var-status=failed")],
        ),
        stat_panel("Retried (range)", RETRIED_IN_RANGE, w=3, decimals=0, steps=RETRIED_STEPS),
        stat_panel("Running", RUNNING, w=3),
        stat_panel("Pending", PENDING, w=3),
        stat_panel("p95 duration", P95_DURATION, unit="s", no_value="-"),
    ]


def outcome_panels() -> list[Any]:
    return [
        ts_panel(
            "Completions by status",
            [prom(COMPLETIONS_BY_STATUS, "{{status}}")],
            unit="ops",
            stack=True,
            description="success / failed / retried (intermediate attempts re-kicked by a retry middleware).",
        ),
        ts_panel(
            "Retries",
            [prom(RETRIED_RATE, "retried/s", ref="A"), prom(RETRY_RATIO, "retried / started", ref="B")],
            unit="short",
            description="Attempts that ended in a retry, absolute and relative to starts.",
        ),
        ts_panel("Exception types", [prom(ERRORS_BY_TYPE, "{{error_type}}")], unit="ops", stack=True, bars=True),
        bargauge.Panel()
        .title("Exception types (range)")
        .datasource(prom_ds())
        .with_target(prom(ERRORS_IN_RANGE, "{{error_type}}", instant=True))
        .span(12)
        .height(8)
        .decimals(0)
        .orientation(cm.VizOrientation.HORIZONTAL)
        .display_mode(cm.BarGaugeDisplayMode.BASIC)
        .thresholds(thresholds((None, "red"))),
    ]


def latency_panels() -> list[timeseries.Panel]:
    dur, wait = promql.DURATION, promql.QUEUE_WAIT
    return [
        ts_panel(
            "Duration by status (exemplars)",
            [
                prom(promql.quantile(0.5, dur, SEL, RI, by="status"), "p50 {{status}}", ref="A", exemplar=True),
                prom(promql.quantile(0.95, dur, SEL, RI, by="status"), "p95 {{status}}", ref="B", exemplar=True),
            ],
            unit="s",
        ),
        ts_panel(
            "Queue wait",
            [
                prom(promql.quantile(0.5, wait, SEL, RI), "p50", ref="A"),
                prom(promql.quantile(0.95, wait, SEL, RI), "p95", ref="B"),
                prom(promql.oldest_pending_age(SEL, by=""), "oldest pending", ref="C"),
            ],
            unit="s",
        ),
    ]


def failures_panel() -> logs.Panel:
    return logs_panel("Recent failures of $task_name", FAILURES_LOG, max_lines=200, h=10)


# ------------------------------------------------------------------------------------------------------------------
# rows
# ------------------------------------------------------------------------------------------------------------------


def task_detail() -> dash.Dashboard:
    d = base(
        CONFIG.task_detail_uid,
        "TaskIQ / Task detail",
        "One task type in depth: throughput, outcomes, exception types, retries, latency, recent failures.",
        "30s",
    )
    return assemble(
        d,
        variables.standard(loki=True, single_task=True),
        [
            ("$task_name", summary_panels()),
            ("Outcomes", outcome_panels()),
            ("Latency", latency_panels()),
            ("Recent failures", [failures_panel()]),
        ],
    )
