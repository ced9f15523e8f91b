"""TaskIQ / History & errors: the filterable task history (Loki events, 50-row pages) and error investigation with
traceback, parameters and trace links. Every field comes from ``| json``; streams are selected only by the stream
labels the shipper sends. Ordered queries → panels → rows.
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common, logs, table
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from taskiq_monitor.events import EVENT_STATUSES
from taskiq_monitor.mixin.config import CONFIG
from taskiq_monitor.mixin.dashboards import variables
from taskiq_monitor.mixin.dashboards.panels import (
    assemble,
    base,
    dashboard_url,
    logql,
    logs_panel,
    loki_bars,
    loki_ds,
    trace_link,
)

# ------------------------------------------------------------------------------------------------------------------
# queries
# ------------------------------------------------------------------------------------------------------------------

LOKI = CONFIG.loki_selector
HISTORY = f'{{{LOKI}, status=~"$status"}} |= "$search" | json'
ERRORS = f'{{{LOKI}, status=~"failed|retried"}} |= "$search" | json'
ERROR_DETAIL = (
    f'{{{LOKI}, status=~"failed|retried"}} |= "$search"'
    ' | json task_id="task_id", error_type="error_type", error_message="error_message",'
    ' traceback="traceback", args="args", kwargs="kwargs", trace_id="trace_id", attempt="attempt"'
    ' | line_format "{{.task_name}} [{{.task_id}}] attempt {{.attempt}}: {{.error_type}}: '
    "{{.error_message}}\\nargs={{.args}} kwargs={{.kwargs}}"
    ' trace_id={{.trace_id}}\\n{{.traceback}}"'
)
ERRORS_BY_TYPE = (
    f'sum by (error_type) (count_over_time({{{LOKI}, status="failed"}} |= "$search"'
    ' | json error_type="error_type" [$__auto]))'
)

# ------------------------------------------------------------------------------------------------------------------
# panels
# ------------------------------------------------------------------------------------------------------------------

HISTORY_COLUMNS = [
    "timestamp",
    "task_name",
    "status",
    "task_id",
    "attempt",
    "duration_seconds",
    "queue_wait_seconds",
    "error_type",
    "error_message",
    "worker",
    "trace_id",
]
ERROR_COLUMNS = [
    "timestamp",
    "task_name",
    "task_id",
    "attempt",
    "error_type",
    "error_message",
    "args",
    "kwargs",
    "traceback",
    "trace_id",
]
# Event fields not worth a column in either table.
_ALWAYS_HIDDEN = ["Time", "schema_version", "labels", "span_id", "enqueued_at", "started_at", "finished_at"]

_EXTRACT = dm.DataTransformerConfig(
    id_val="extractFields",
    options={"source": "Line", "format": "json", "replace": True, "keepTime": True},
)


def _organize(columns: list[str], hidden: list[str]) -> dm.DataTransformerConfig:
    return dm.DataTransformerConfig(
        id_val="organize",
        options={
            "indexByName": {name: i for i, name in enumerate(columns)},
            "excludeByName": dict.fromkeys(hidden, True),
            "renameByName": {},
        },
    )


STATUS_COLOURS = {"success": "green", "failed": "red", "retried": "orange", "running": "blue", "pending": "text"}


def _events_table(
    title: str, expr: str, max_lines: int, columns: list[str], hidden: list[str], h: int, cells: cm.TableCellHeight
) -> table.Panel:
    """A full-width, paged table of Loki event records, one column per field (every field comes from ``| json``)."""
    return (
        table.Panel()
        .title(title)
        .datasource(loki_ds())
        .with_target(logql(expr, max_lines=max_lines))
        .with_transformation(_EXTRACT)
        .with_transformation(_organize(columns, [*_ALWAYS_HIDDEN, *hidden]))
        .span(24)
        .height(h)
        .cell_height(cells)
        .filterable(True)
        .footer(common.TableFooterOptions().show(False).reducer(["count"]).enable_pagination(True))
        .override_by_name("trace_id", [dm.DynamicConfigValue(id_val="links", value=[trace_link()])])
    )


def history_table() -> table.Panel:
    own_events = dashboard_url(CONFIG.history_uid, "var-search=${__value.raw}&var-status=All")
    mapping = {s: {"color": c, "index": i} for i, (s, c) in enumerate(STATUS_COLOURS.items())}
    hidden = ["args", "kwargs", "traceback"]
    return (
        _events_table("Task history", HISTORY, 5000, HISTORY_COLUMNS, hidden, 51, cm.TableCellHeight.SM)
        .description(
            "One row per state change. Filters: Task, Status, and the text box (task id or error). "
            "The table pages by panel height: sized for 50 rows a page."
        )
        .show_header(True)
        .sort_by([common.TableSortByFieldState().display_name("timestamp").desc(True)])
        .override_by_name(
            "task_id",
            [dm.DynamicConfigValue(id_val="links", value=[{"title": "Show this task's events", "url": own_events}])],
        )
        .override_by_name(
            "status",
            [
                dm.DynamicConfigValue(id_val="mappings", value=[{"type": "value", "options": mapping}]),
                dm.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"}),
            ],
        )
        .override_by_name("duration_seconds", [dm.DynamicConfigValue(id_val="unit", value="s")])
        .override_by_name("queue_wait_seconds", [dm.DynamicConfigValue(id_val="unit", value="s")])
    )


def errors_table() -> table.Panel:
    hidden = ["status", "worker", "queue_wait_seconds"]
    title = "Errors: message, parameters, traceback"
    return (
        _events_table(title, ERRORS, 1000, ERROR_COLUMNS, hidden, 16, cm.TableCellHeight.LG)
        .override_by_name(
            "traceback",
            [
                dm.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "auto", "wrapText": True}),
                dm.DynamicConfigValue(id_val="custom.inspect", value=True),
                dm.DynamicConfigValue(id_val="custom.width", value=600),
            ],
        )
        .override_by_name("args", [dm.DynamicConfigValue(id_val="custom.inspect", value=True)])
        .override_by_name("kwargs", [dm.DynamicConfigValue(id_val="custom.inspect", value=True)])
    )


def error_detail_panel() -> logs.Panel:
    return logs_panel(
        "Error detail (traceback and parameters)",
        ERROR_DETAIL,
        max_lines=200,
        h=20,
        description="Each failure rendered as message, parameters and the full stack trace. Expand a line: "
        "trace_id links to the trace.",
    )


# ------------------------------------------------------------------------------------------------------------------
# rows
# ------------------------------------------------------------------------------------------------------------------


def history() -> dash.Dashboard:
    d = base(
        CONFIG.history_uid,
        "TaskIQ / History & errors",
        "Filterable task history (Loki events, 50-row pages) and error investigation with traceback, "
        "parameters and trace links.",
        "1m",
        time_from="now-24h",
    )
    return assemble(
        d,
        variables.standard(loki=True, statuses=EVENT_STATUSES, search=True),
        [
            ("History", [history_table()]),
            (
                "Errors",
                [
                    errors_table(),
                    error_detail_panel(),
                    loki_bars("Errors by type (Loki)", ERRORS_BY_TYPE, "{{error_type}}"),
                ],
            ),
        ],
    )
