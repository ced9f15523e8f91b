"""TaskIQ / Live activity: task events as they happen (Loki) and the current state counts (Prometheus).

Refreshes every 5 s over the last 15 minutes. Ordered queries → panels → rows.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import logs, stat

from taskiq_monitor.events import EVENT_STATUSES
from taskiq_monitor.mixin import promql
from taskiq_monitor.mixin.config import CONFIG
from taskiq_monitor.mixin.dashboards import variables
from taskiq_monitor.mixin.dashboards.panels import (
    FAILED_STEPS,
    RETRIED_STEPS,
    assemble,
    base,
    logs_panel,
    loki_bars,
    stat_panel,
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


def event_stream_panel() -> logs.Panel:
    return logs_panel(
        "Recent events",
        EVENT_LINES,
        max_lines=500,
        h=18,
        description="Newest first. Expand a line for task_id / trace_id (structured metadata) and the trace link.",
        wrap=False,
        labels=False,
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
    return assemble(
        d,
        variables.standard(loki=True, statuses=EVENT_STATUSES),
        [
            ("State now", [*state_panels(), loki_bars("Events by status", EVENTS_BY_STATUS, "{{status}}")]),
            ("Event stream", [event_stream_panel()]),
        ],
    )
