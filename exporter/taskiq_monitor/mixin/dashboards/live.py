"""TaskIQ / Live activity: task events as they happen (Loki) and the current state counts (Prometheus).

Refreshes every 5 s over the last 15 minutes. Ordered queries → panels → rows.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import logs, stat, timeseries
from grafana_foundation_sdk.models import common as cm

from taskiq_monitor.events import EVENT_STATUSES
from taskiq_monitor.mixin import promql
from taskiq_monitor.mixin.config import CONFIG
from taskiq_monitor.mixin.dashboards.panels import (
    FAILED_STEPS,
    RETRIED_STEPS,
    base,
    logql,
    loki_ds,
    stat_panel,
    ts_panel,
)
from taskiq_monitor.mixin.dashboards.variables import (
    var_datasource,
    var_job,
    var_loki_datasource,
    var_service_name,
    var_status,
    var_task_name,
)

# ------------------------------------------------------------------------------------------------------------------
# queries
# ------------------------------------------------------------------------------------------------------------------

SEL = CONFIG.dashboard_selector
EVENTS = f'{{{CONFIG.loki_selector}, status=~"$status"}}'

PENDING = promql.pending(SEL, by="")
RUNNING = promql.running(SEL, by="")
STARTED_1M = promql.total(promql.STARTED, SEL, "1m", by="", fn="increase")
SUCCEEDED_1M = promql.completed("success", SEL, "1m", by="")
FAILED_1M = promql.completed("failed", SEL, "1m", by="")
RETRIED_1M = promql.completed("retried", SEL, "1m", by="")
EVENTS_BY_STATUS = f"sum by (status) (count_over_time({EVENTS} [$__auto]))"
EVENT_LINES = (
    f"{EVENTS} | json"
    ' | line_format "{{.status | upper}} {{.task_name}} task_id={{.task_id}} attempt={{.attempt}}'
    ' duration={{.duration_seconds}}s {{.error_type}}"'
)

# ------------------------------------------------------------------------------------------------------------------
# panels
# ------------------------------------------------------------------------------------------------------------------


def state_panels() -> list[stat.Panel]:
    return [
        stat_panel("Pending", PENDING),
        stat_panel("Running", RUNNING),
        stat_panel("Started (1m)", STARTED_1M, decimals=0),
        stat_panel("Succeeded (1m)", SUCCEEDED_1M, decimals=0, steps=[(None, "green")]),
        stat_panel("Failed (1m)", FAILED_1M, decimals=0, steps=FAILED_STEPS),
        stat_panel("Retried (1m)", RETRIED_1M, decimals=0, steps=RETRIED_STEPS),
    ]


def events_by_status_panel() -> timeseries.Panel:
    return ts_panel(
        "Events by status",
        [logql(EVENTS_BY_STATUS, legend="{{status}}", metric=True)],
        w=24,
        h=7,
        stack=True,
        bars=True,
        ds=loki_ds(),
    )


def event_stream_panel() -> logs.Panel:
    return (
        logs.Panel()
        .title("Recent events")
        .description("Newest first. Expand a line for task_id / trace_id (structured metadata) and the trace link.")
        .datasource(loki_ds())
        .with_target(logql(EVENT_LINES, max_lines=500))
        .span(24)
        .height(18)
        .show_time(True)
        .show_labels(False)
        .wrap_log_message(False)
        .enable_log_details(True)
        .sort_order(cm.LogsSortOrder.DESCENDING)
    )


# ------------------------------------------------------------------------------------------------------------------
# rows
# ------------------------------------------------------------------------------------------------------------------


def live() -> dash.Dashboard:
    d = base(
        CONFIG.live_uid,
        "TaskIQ / Live activity",
        "Task events as they happen (Loki) and current state counts.",
        "5s",
        time_from="now-15m",
    )
    d = (
        d.with_variable(var_datasource())
        .with_variable(var_loki_datasource())
        .with_variable(var_job())
        .with_variable(var_task_name())
        .with_variable(var_status(EVENT_STATUSES))
        .with_variable(var_service_name())
    )
    d = d.with_row(dash.Row("State now"))
    for panel in state_panels():
        d = d.with_panel(panel)
    d = d.with_panel(events_by_status_panel())
    d = d.with_row(dash.Row("Event stream")).with_panel(event_stream_panel())
    return d
