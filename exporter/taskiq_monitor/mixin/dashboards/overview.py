"""TaskIQ / Overview: health of every task type at a glance, then fleet totals, throughput, queue, latency and the
monitoring's own health.

The health table on top has one row per task type (pending, running, success, failed, 24 h success rate, average
duration), coloured with the thresholds the alerts use, and each row links to Task detail. The per-type stat cards
that used to fill the page (six per type: 15 types were 90 panels) are kept below it in a repeated row, collapsed.
Ordered queries → panels → rows.
"""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.builders import common, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from taskiq_monitor.mixin import promql
from taskiq_monitor.mixin.config import CONFIG
from taskiq_monitor.mixin.dashboards import variables
from taskiq_monitor.mixin.dashboards.panels import (
    FAILED_STEPS,
    FAILURE_RATIO_STEPS,
    OLDEST_PENDING_STEPS,
    PENDING_STEPS,
    SUCCESS_RATIO_STEPS,
    Steps,
    assemble,
    base,
    dashboard_url,
    data_link,
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
JOB = CONFIG.dashboard_job_selector
HW = CONFIG.health_window
RI = "$__rate_interval"

WORKERS = promql.workers(JOB)
RUNNING = promql.running(SEL, by="")
PENDING = promql.pending(SEL, by="")
OLDEST_PENDING = promql.oldest_pending_age(SEL, by="")
THROUGHPUT = promql.total(promql.COMPLETED, SEL, "5m", extra=promql.FINAL, by="")
FAILURE_RATIO = promql.failure_ratio(SEL, CONFIG.failure_ratio_window, by="")
SUCCESS_RATIO = promql.success_ratio(SEL, HW, by="")
MONITORING_ERRORS = promql.total("taskiq_monitor_errors_total", JOB, "1h", by="", fn="increase")
SUCCEEDED_IN_RANGE = promql.completed("success", SEL, "$__range", by="")
FAILED_IN_RANGE = promql.completed("failed", SEL, "$__range", by="")
MEAN_DURATION = promql.mean_duration(SEL, HW, by="")

# The health table: one instant query per column, each by task_name, merged on task_name.
HEALTH_COLUMNS: tuple[tuple[str, str], ...] = (
    ("Pending", promql.pending(SEL)),
    ("Running", promql.running(SEL)),
    ("Success (range)", promql.completed("success", SEL, "$__range")),
    ("Failed (range)", promql.completed("failed", SEL, "$__range")),
    (f"Success rate ({HW})", promql.success_ratio(SEL, HW)),
    (f"Avg duration ({HW})", promql.mean_duration(SEL, HW)),
)

# ------------------------------------------------------------------------------------------------------------------
# panels
# ------------------------------------------------------------------------------------------------------------------

TASK_DETAIL = dashboard_url(CONFIG.task_detail_uid, "var-task_name=${task_name}")
FAILED_HISTORY = dashboard_url(CONFIG.history_uid, "var-task_name=${task_name}&var-status=failed")
# In a table cell, the row's own task type (the ${task_name} variable is "All" on this dashboard).
ROW_TASK_DETAIL = dashboard_url(CONFIG.task_detail_uid, "var-task_name=${__data.fields.task_name}")
ROW_FAILED_HISTORY = dashboard_url(CONFIG.history_uid, "var-task_name=${__data.fields.task_name}&var-status=failed")


def _coloured(name: str, steps: Steps, **extra: Any) -> tuple[str, list[dm.DynamicConfigValue]]:
    props = [
        dm.DynamicConfigValue(id_val="thresholds", value=thresholds(*steps).build()),
        dm.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-background", "mode": "basic"}),
    ]
    props += [dm.DynamicConfigValue(id_val=key, value=value) for key, value in extra.items()]
    return name, props


def health_table() -> table.Panel:
    """One row per task type, coloured with the alert thresholds, every cell linking to the type's Task detail."""
    names = [name for name, _ in HEALTH_COLUMNS]
    p = (
        table.Panel()
        .title("Health by task type")
        .description(
            "One row per task type. Pending turns orange at the backlog alert's threshold; the success rate turns "
            "red below the failure-ratio alert's line. Click a row for its Task detail."
        )
        .datasource(prom_ds())
        .targets(
            [prom(expr, ref=chr(ord("A") + i), instant=True, fmt="table") for i, (_, expr) in enumerate(HEALTH_COLUMNS)]
        )
        .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            dm.DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True},
                    "indexByName": {"task_name": 0, **{name: i + 1 for i, name in enumerate(names)}},
                    "renameByName": {f"Value #{chr(ord('A') + i)}": name for i, name in enumerate(names)},
                },
            )
        )
        .span(24)
        .height(14)
        .cell_height(cm.TableCellHeight.SM)
        .show_header(True)
        .filterable(False)
        .no_value("-")
        .sort_by([common.TableSortByFieldState().display_name("task_name")])
        .data_links([data_link("Task detail", ROW_TASK_DETAIL)])
    )
    overrides = [
        _coloured("Pending", PENDING_STEPS, decimals=0),
        ("Running", [dm.DynamicConfigValue(id_val="decimals", value=0)]),
        ("Success (range)", [dm.DynamicConfigValue(id_val="decimals", value=0)]),
        _coloured(
            "Failed (range)",
            FAILED_STEPS,
            decimals=0,
            links=[
                {"title": "Task detail", "url": ROW_TASK_DETAIL},
                {"title": "Failed runs in History & errors", "url": ROW_FAILED_HISTORY},
            ],
        ),
        _coloured(f"Success rate ({HW})", SUCCESS_RATIO_STEPS, unit="percentunit", decimals=2),
        (f"Avg duration ({HW})", [dm.DynamicConfigValue(id_val="unit", value="s")]),
    ]
    for name, props in overrides:
        p = p.override_by_name(name, props)
    return p


def fleet_panels() -> list[stat.Panel]:
    return [
        stat_panel(
            "Workers",
            WORKERS,
            w=3,
            description="Live worker processes by heartbeat.",
            steps=[(None, "red"), (1, "green")],
        ),
        stat_panel("Running", RUNNING, w=3),
        stat_panel("Pending", PENDING, w=3, steps=PENDING_STEPS),
        stat_panel("Oldest pending", OLDEST_PENDING, unit="s", w=3, steps=OLDEST_PENDING_STEPS),
        stat_panel(
            "Throughput", THROUGHPUT, unit="ops", w=3, graph=True, description="Finished tasks per second (5m)."
        ),
        stat_panel(
            f"Failure ratio ({CONFIG.failure_ratio_window})",
            FAILURE_RATIO,
            unit="percentunit",
            w=3,
            decimals=1,
            steps=FAILURE_RATIO_STEPS,
            no_value="-",
        ),
        success_rate_stat(SUCCESS_RATIO, HW, w=3),
        stat_panel(
            "Monitoring errors (1h)",
            MONITORING_ERRORS,
            w=3,
            description="Failures of the monitoring itself (details in the Monitoring row).",
            steps=FAILED_STEPS,
        ),
    ]


def task_cards() -> list[stat.Panel]:
    """The six stat cards of one task type (the row repeats them per $task_name)."""
    detail = [data_link("Task detail", TASK_DETAIL)]
    return [
        stat_panel("Pending", PENDING, steps=PENDING_STEPS, links=detail),
        stat_panel("Running", RUNNING, links=detail),
        stat_panel("Success (range)", SUCCEEDED_IN_RANGE, decimals=0, steps=[(None, "green")], links=detail),
        stat_panel(
            "Failed (range)",
            FAILED_IN_RANGE,
            decimals=0,
            steps=FAILED_STEPS,
            links=[data_link("Failed runs in History & errors", FAILED_HISTORY)],
        ),
        success_rate_stat(SUCCESS_RATIO, HW),
        stat_panel(
            f"Avg duration ({HW})",
            MEAN_DURATION,
            unit="s",
            decimals=3,
            description=f"sum(duration of successful runs) / count(successful runs), {HW}.",
            no_value="-",
        ),
    ]


def throughput_panels() -> list[timeseries.Panel]:
    return [
        ts_panel(
            "Throughput by task",
            [prom(promql.total(promql.COMPLETED, SEL, RI, extra='status="success"'), "{{task_name}}")],
            unit="ops",
            stack=True,
            description="Successful completions per second.",
        ),
        ts_panel(
            "Failure ratio by task",
            [prom(promql.failure_ratio(SEL, RI), "{{task_name}}")],
            unit="percentunit",
            description="failed / (success + failed); retried attempts excluded.",
        ),
        ts_panel(
            "Enqueued vs started",
            [
                prom(promql.total(promql.ENQUEUED, SEL, RI, by=""), "enqueued", ref="A"),
                prom(promql.total(promql.STARTED, SEL, RI, by=""), "started", ref="B"),
            ],
            unit="ops",
            description="Enqueued (app side, job taskiq-app) against started (workers).",
        ),
        ts_panel(
            "Failures by task",
            [prom(promql.total(promql.COMPLETED, SEL, RI, extra='status="failed"'), "{{task_name}}")],
            unit="ops",
            stack=True,
            bars=True,
        ),
    ]


def queue_panels() -> list[timeseries.Panel]:
    return [
        ts_panel("Queue depth (pending)", [prom(promql.pending(SEL), "{{task_name}}")], w=8, stack=True),
        ts_panel("Oldest pending age", [prom(promql.oldest_pending_age(SEL), "{{task_name}}")], unit="s", w=8),
        ts_panel(
            "Running",
            [prom(promql.running(SEL), "{{task_name}}"), prom(WORKERS, "workers", ref="B")],
            w=8,
        ),
    ]


def latency_panels() -> list[timeseries.Panel]:
    dur, wait = promql.DURATION, promql.QUEUE_WAIT
    return [
        ts_panel(
            "Duration percentiles (exemplars)",
            [
                prom(promql.quantile(q, dur, SEL, RI), f"p{q * 100:g}", ref=ref, exemplar=True)
                for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))
            ],
            unit="s",
            description="Exemplars link to traces (trace_id → Tempo) where the exporter attaches them.",
        ),
        ts_panel(
            "p95 duration by task",
            [prom(promql.quantile(0.95, dur, SEL, RI, by="task_name"), "{{task_name}}", exemplar=True)],
            unit="s",
        ),
        ts_panel(
            "Queue wait percentiles",
            [
                prom(promql.quantile(0.5, wait, SEL, RI), "p50", ref="A"),
                prom(promql.quantile(0.95, wait, SEL, RI), "p95", ref="B"),
            ],
            unit="s",
            description="Time from .kiq() to start of execution.",
        ),
        ts_panel("Average duration by task", [prom(promql.mean_duration(SEL, RI), "{{task_name}}")], unit="s"),
    ]


def monitoring_panels() -> list[timeseries.Panel]:
    return [
        ts_panel(
            "Monitoring errors by component",
            [prom(promql.total("taskiq_monitor_errors_total", JOB, RI, by="component"), "{{component}}")],
            unit="ops",
            w=8,
            description="The exporter's own failures (Loki push, Redis state, hooks); should stay at zero.",
        ),
        ts_panel(
            "Event records by result",
            [prom(promql.total("taskiq_monitor_log_records_total", JOB, RI, by="result"), "{{result}}")],
            unit="ops",
            w=8,
            stack=True,
            description="Records shipped to Loki, spooled to disk while Loki is unreachable, or dropped.",
        ),
        ts_panel(
            "Backlogs",
            [
                prom(
                    f"sum({promql.series('taskiq_monitor_log_queue_records', JOB)})",
                    "Loki, in memory (records)",
                    ref="A",
                ),
                prom(f"sum({promql.series('taskiq_monitor_log_spool_bytes', JOB)})", "Loki spool (bytes)", ref="B"),
                prom(
                    f"sum({promql.series('taskiq_monitor_state_buffer_events', JOB)})",
                    "state store, in memory (events)",
                    ref="C",
                ),
            ],
            w=8,
            description="What the worker processes hold for Loki and for the state store. A buffer that only grows "
            "while Loki and Redis are healthy: the processes run flat out, and their writer threads wait for the GIL.",
        ),
        ts_panel(
            "State store up",
            [prom(f"min by (instance) ({promql.series('taskiq_monitor_state_up', JOB)})", "{{instance}}")],
            w=6,
            description="1 while the exporter can read the shared task state (Redis); 0 for "
            f"{CONFIG.state_store_down_for} fires TaskiqStateStoreDown. Queue depth, workers and the live feed "
            "need it.",
        ),
        ts_panel(
            "State events by result",
            [prom(promql.total("taskiq_monitor_state_events_total", JOB, RI, by="result"), "{{result}}")],
            unit="ops",
            w=6,
            stack=True,
            description="Task events written to the state store, or dropped because the buffer was full: Redis "
            "unreachable, or the writer thread behind a loop that never idles (TaskiqLiveStateDropping).",
        ),
        ts_panel(
            "Live feed clients",
            [prom(f"sum by (instance) ({promql.series('taskiq_monitor_live_clients', JOB)})", "{{instance}}")],
            w=6,
            description="WebSocket clients of the live feed, per exporter.",
        ),
        ts_panel(
            "Expired pending entries",
            [
                prom(
                    f"max by (task_name) (increase({promql.series(promql.PENDING_EXPIRED, SEL)}[{RI}]))",
                    "{{task_name}}",
                )
            ],
            w=6,
            bars=True,
            description="Pending entries older than the pending horizon, expired: lost messages. Queue-wide "
            "(max over exporters).",
        ),
        ts_panel(
            "Execution history size",
            [prom(f"max({promql.series(promql.HISTORY_EXECUTIONS, JOB)})", "executions held")],
            description="Execution records held by the history store (GET /api/v1/executions). It levels off at "
            "the retention (TASKIQ_MONITOR_HISTORY_RETENTION_DAYS) or the cap "
            "(TASKIQ_MONITOR_HISTORY_MAX_EXECUTIONS). Queue-wide (max over exporters).",
        ),
        ts_panel(
            "Execution history evictions by reason",
            [
                prom(
                    f"max by (reason) (increase({promql.series(promql.HISTORY_EVICTED, JOB)}[{RI}]))",
                    "{{reason}}",
                )
            ],
            bars=True,
            description="Executions deleted from the history: age = older than the retention (expected once the "
            "history is full); count = the oldest beyond the cap, so the history holds less than the retention "
            "(TaskiqHistoryEvictingByCount: raise the cap or size Redis, see docs/scaling.md). Queue-wide (max over "
            "exporters).",
        ),
    ]


# ------------------------------------------------------------------------------------------------------------------
# rows
# ------------------------------------------------------------------------------------------------------------------


def overview() -> dash.Dashboard:
    d = base(
        CONFIG.overview_uid,
        "TaskIQ / Overview",
        "Health of every task type at a glance (table), fleet totals, and per-type stat cards (collapsed rows, "
        "repeated by $task_name).",
        "30s",
    )
    d = assemble(d, variables.standard(), [("Health", [health_table()])])
    # Grafana repeats the row and the cards inside it per selected task type; collapsed, each is one line.
    cards = dash.Row("$task_name").repeat("task_name")
    for card in task_cards():
        cards = cards.with_panel(card)
    d = d.with_row(cards.collapsed(True))
    return assemble(
        d,
        [],
        [
            ("Fleet", fleet_panels()),
            ("Throughput & failures", throughput_panels()),
            ("Queue & concurrency", queue_panels()),
            ("Latency", latency_panels()),
            ("Monitoring", monitoring_panels()),
        ],
    )
