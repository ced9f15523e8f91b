"""Generate the TaskIQ Grafana dashboards from code.

The JSON under ``grafana/dashboards/`` is produced by this module and committed; a test
(``tests/test_grafana_dashboards.py``) fails when the committed files differ from what this
module generates, so edit this file and regenerate instead of editing the JSON::

    python grafana/generate.py           # rewrite grafana/dashboards/*.json
    python grafana/generate.py --check   # exit 1 if the committed JSON is stale

It uses ``grafana-foundation-sdk`` pinned to the Grafana 11.6 flavour
(``pip install 'grafana-foundation-sdk==1769699379!11.6.0'``): a plain install resolves to the
10.1 flavour, whose models differ. The SDK validates little; the offline checks under
``tests/`` (JSON Schema from ``@grafana/schema``, LogQL grammar, datasource uids, PromQL run
against a real Prometheus) do the proving.

Dashboards query the raw metrics of the contract (no recording rules), so they work on a
Prometheus that has no rules loaded. Loki queries select streams only by the labels the shipper
sends (``service_name``, ``task_name``, ``status``, ``env``); every other field comes from
``| json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import bargauge, common, logs, loki, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm

from taskiq_monitor.mixin.config import CONFIG

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"

# Datasource uids provisioned in grafana/provisioning/datasources/datasources.yaml (contract).
PROMETHEUS_UID = CONFIG.prometheus_datasource_uid
LOKI_UID = CONFIG.loki_datasource_uid
TEMPO_UID = CONFIG.tempo_datasource_uid

# The 11.6 flavour of the SDK emits schemaVersion 41 (Grafana 11.6's own); newer Grafana
# (12.x, 13.x: 42) migrates it forward on load, older versions do not understand newer numbers.
SCHEMA_VERSION = 41

# Grafana's default [dashboards] min_refresh_interval is 5s: a shorter entry would be clamped.
# For 1s, set GF_DASHBOARDS_MIN_REFRESH_INTERVAL=1s and add "1s" here (docs/dashboards.md).
REFRESH_INTERVALS = list(CONFIG.refresh_intervals)

# Loki stream selector shared by all log panels: only stream labels the shipper sends.
LOKI_SELECTOR = CONFIG.loki_selector

# Prometheus matchers shared by all task queries.
TASK_MATCH = CONFIG.dashboard_selector

TAGS = list(CONFIG.tags)

# Metric status values vs event status values (contract).
METRIC_STATUSES = ["success", "failed", "retried"]
EVENT_STATUSES = ["pending", "running", "success", "failed", "retried"]


# --------------------------------------------------------------------------------------------
# small building blocks
# --------------------------------------------------------------------------------------------


class _Raw:
    """A JSON value the SDK has no model for (e.g. field data links); the encoder calls to_json."""

    def __init__(self, value: dict[str, Any]) -> None:
        self.value = value

    def to_json(self) -> dict[str, Any]:
        return self.value


class _RawBuilder(cogbuilder.Builder[Any]):
    def __init__(self, value: dict[str, Any]) -> None:
        self.value = value

    def build(self) -> Any:
        return _Raw(self.value)


def prom_ds() -> dm.DataSourceRef:
    return dm.DataSourceRef(type_val="prometheus", uid="${datasource}")


def loki_ds() -> dm.DataSourceRef:
    return dm.DataSourceRef(type_val="loki", uid="${loki_datasource}")


def prom(
    expr: str,
    legend: str = "__auto",
    *,
    instant: bool = False,
    exemplar: bool = False,
    ref: str = "A",
    fmt: str | None = None,
) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(prom_ds())
    q = q.instant() if instant else q.range()
    if exemplar:
        q = q.exemplar(True)
    if fmt == "table":
        q = q.format(prometheus.PromQueryFormat.TABLE)
    return q


def logql(
    expr: str,
    *,
    ref: str = "A",
    max_lines: int | None = None,
    legend: str | None = None,
    metric: bool = False,
) -> loki.Dataquery:
    q = loki.Dataquery().expr(expr).ref_id(ref).datasource(loki_ds()).query_type("range")
    if max_lines is not None:
        q = q.max_lines(max_lines)
    if legend is not None:
        q = q.legend_format(legend)
    if metric:
        q = q.step("$__interval")
    return q


def thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return (
        dash.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=v, color=c) for v, c in steps])
    )


def dashboard_url(uid: str, params: str = "") -> str:
    """Link into another TaskIQ dashboard, keeping the time range."""
    sep = "&" if params else ""
    return f"/d/{uid}?{params}{sep}${{__url_time_range}}"


def data_link(title: str, url: str) -> _RawBuilder:
    return _RawBuilder({"title": title, "url": url})


def trace_link() -> dict[str, Any]:
    """Field data link opening the trace of a row in the trace datasource (Tempo)."""
    return {
        "title": "Open trace ${__value.raw}",
        "url": "",
        "internal": {
            "datasourceUid": TEMPO_UID,
            "datasourceName": "Tempo",
            "query": {"queryType": "traceql", "query": "${__value.raw}"},
        },
    }


def stat_panel(
    title: str,
    expr: str,
    *,
    unit: str = "short",
    w: int = 4,
    h: int = 4,
    decimals: float | None = None,
    steps: Iterable[tuple[float | None, str]] | None = None,
    description: str = "",
    links: list[_RawBuilder] | None = None,
    graph: bool = False,
    no_value: str = "0",
) -> stat.Panel:
    p = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(prom_ds())
        .with_target(prom(expr, instant=not graph))
        .unit(unit)
        .span(w)
        .height(h)
        .no_value(no_value)
        .graph_mode(cm.BigValueGraphMode.AREA if graph else cm.BigValueGraphMode.NONE)
        .color_mode(cm.BigValueColorMode.BACKGROUND)
        .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .thresholds(thresholds(*(steps or [(None, "blue")])))
    )
    if decimals is not None:
        p = p.decimals(decimals)
    if links:
        p = p.data_links(links)  # type: ignore[arg-type]
    return p


def ts_panel(
    title: str,
    targets: list[prometheus.Dataquery | loki.Dataquery],
    *,
    unit: str = "short",
    w: int = 12,
    h: int = 8,
    description: str = "",
    stack: bool = False,
    bars: bool = False,
    ds: dm.DataSourceRef | None = None,
) -> timeseries.Panel:
    p = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(ds or prom_ds())
        .targets(targets)  # type: ignore[arg-type]
        .unit(unit)
        .span(w)
        .height(h)
        .fill_opacity(60 if bars else 10)
        .line_width(1)
        .legend(
            common.VizLegendOptions()
            .display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.RIGHT)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(common.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
    )
    if bars:
        p = p.draw_style(cm.GraphDrawStyle.BARS)
    if stack:
        p = p.stacking(common.StackingConfig().mode(cm.StackingMode.NORMAL))
    return p


def text_panel_md(title: str, content: str, *, w: int = 24, h: int = 3) -> dash.Panel:
    return dash.Panel().type("text").title(title).span(w).height(h).options({"mode": "markdown", "content": content})


# --------------------------------------------------------------------------------------------
# template variables
# --------------------------------------------------------------------------------------------


def var_datasource() -> dash.DatasourceVariable:
    return (
        dash.DatasourceVariable("datasource")
        .label("Prometheus")
        .type("prometheus")
        .current(dm.VariableOption(selected=True, text="Prometheus", value=PROMETHEUS_UID))
    )


def var_loki_datasource() -> dash.DatasourceVariable:
    return (
        dash.DatasourceVariable("loki_datasource")
        .label("Loki")
        .type("loki")
        .current(dm.VariableOption(selected=True, text="Loki", value=LOKI_UID))
    )


def var_job() -> dash.QueryVariable:
    # Worker exporters scrape as job="taskiq", the app side (.kiq()) as job="taskiq-app".
    q = 'label_values({__name__=~"taskiq_tasks_enqueued_total|taskiq_tasks_started_total"}, job)'
    return (
        dash.QueryVariable("job")
        .label("Job")
        .datasource(prom_ds())
        .query({"query": q, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1})
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def var_task_name(*, multi: bool = True) -> dash.QueryVariable:
    # taskiq_tasks_started_total: every registered task is exported with zeros from start.
    q = 'label_values(taskiq_tasks_started_total{job=~"$job"}, task_name)'
    v = (
        dash.QueryVariable("task_name")
        .label("Task")
        .datasource(prom_ds())
        .query({"query": q, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1})
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(multi)
    )
    if multi:
        v = v.all_value(".*").current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
    return v


def var_status(values: list[str]) -> dash.CustomVariable:
    v = (
        dash.CustomVariable("status")
        .label("Status")
        .values(",".join(values))
        .multi(True)
        .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )
    built = v.build()
    built.include_all = True
    built.all_value = ".*"
    return v


def var_service_name() -> dash.CustomVariable:
    return (
        dash.CustomVariable("service_name")
        .label("Service")
        .description("Loki service_name stream label (TASKIQ_MONITOR service name, default taskiq)")
        .values("taskiq")
        .allow_custom_value(True)
        .current(dm.VariableOption(selected=True, text="taskiq", value="taskiq"))
    )


def var_search() -> dash.TextBoxVariable:
    return (
        dash.TextBoxVariable("search")
        .label("Task id / error contains")
        .description("Substring matched against the whole event line: task id, error type/message, traceback")
        .default_value("")
        .current(dm.VariableOption(selected=True, text="", value=""))
    )


# --------------------------------------------------------------------------------------------
# dashboards
# --------------------------------------------------------------------------------------------


def base(uid: str, title: str, description: str, refresh: str, time_from: str = "now-6h") -> dash.Dashboard:
    b = (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .time(time_from, "now")
        .timezone("browser")
        .refresh(refresh)
        .timepicker(dash.TimePicker().refresh_intervals(REFRESH_INTERVALS))
        .link(
            dash.DashboardLink("TaskIQ")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags(TAGS)
            .as_dropdown(False)
            .include_vars(True)
            .keep_time(True)
        )
    )
    b.build().schema_version = SCHEMA_VERSION
    return b


def completed(status: str, window: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f'sum{grouping}(increase(taskiq_tasks_completed_total{{{TASK_MATCH}, status="{status}"}}[{window}]))'


def rate(metric: str, extra: str = "", by: str = "", window: str = "$__rate_interval") -> str:
    grouping = f" by ({by})" if by else ""
    matchers = TASK_MATCH + (f", {extra}" if extra else "")
    return f"sum{grouping}(rate({metric}{{{matchers}}}[{window}]))"


def success_ratio(window: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    ok = f'taskiq_tasks_completed_total{{{TASK_MATCH}, status="success"}}'
    done = f'taskiq_tasks_completed_total{{{TASK_MATCH}, status=~"success|failed"}}'
    return f"sum{grouping}(increase({ok}[{window}])) / sum{grouping}(increase({done}[{window}]))"


def failure_ratio(window: str, by: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    bad = f'taskiq_tasks_completed_total{{{TASK_MATCH}, status="failed"}}'
    done = f'taskiq_tasks_completed_total{{{TASK_MATCH}, status=~"success|failed"}}'
    return f"sum{grouping}(rate({bad}[{window}])) / sum{grouping}(rate({done}[{window}]))"


def avg_duration(window: str, status: str = "success") -> str:
    m = f'{{{TASK_MATCH}, status="{status}"}}'
    return (
        f"sum(increase(taskiq_task_duration_seconds_sum{m}[{window}]))"
        f" / sum(increase(taskiq_task_duration_seconds_count{m}[{window}]))"
    )


def quantile(q: float, metric: str, extra: str = "", by: str = "le") -> str:
    matchers = TASK_MATCH + (f", {extra}" if extra else "")
    return f"histogram_quantile({q}, sum by ({by}) (rate({metric}_bucket{{{matchers}}}[$__rate_interval])))"


def pending(by: str = "") -> str:
    """Pending tasks: queue-wide per task type (every exporter sharing the Redis reports the same value), so max
    de-duplicates the exporters and sum adds the task types."""
    if by == "task_name":
        return f"max by (task_name) (taskiq_tasks_pending{{{TASK_MATCH}}})"
    return f"sum(max by (task_name) (taskiq_tasks_pending{{{TASK_MATCH}}}))"


# Live worker processes by heartbeat: queue-wide, the same from every exporter (max, not sum).
WORKERS = 'max(taskiq_workers{job=~"$job"})'

PENDING_STEPS = [(None, "green"), (CONFIG.backlog_min_pending, "orange"), (CONFIG.backlog_critical_pending, "red")]
RATIO_STEPS = [(None, "red"), (CONFIG.success_ratio_warning, "orange"), (CONFIG.success_ratio_ok, "green")]


def overview() -> dash.Dashboard:
    d = base(
        CONFIG.overview_uid,
        "TaskIQ / Overview",
        "Fleet health and one health card row per task type (repeat by $task_name).",
        "30s",
    )
    d = d.with_variable(var_datasource()).with_variable(var_job()).with_variable(var_task_name())

    d = d.with_row(dash.Row("Fleet"))
    d = d.with_panel(
        stat_panel(
            "Workers",
            WORKERS,
            w=3,
            description="Live worker processes by heartbeat.",
            steps=[(None, "red"), (1, "green")],
        )
    )
    d = d.with_panel(stat_panel("Running", f"sum(taskiq_tasks_running{{{TASK_MATCH}}})", w=3))
    d = d.with_panel(
        stat_panel(
            "Pending",
            pending(),
            w=3,
            steps=PENDING_STEPS,
        )
    )
    d = d.with_panel(
        stat_panel(
            "Oldest pending",
            f"max(taskiq_task_oldest_pending_age_seconds{{{TASK_MATCH}}})",
            unit="s",
            w=3,
            steps=[
                (None, "green"),
                (CONFIG.oldest_pending_warning_seconds, "orange"),
                (CONFIG.oldest_pending_max_age_seconds, "red"),
            ],
        )
    )
    d = d.with_panel(
        stat_panel(
            "Throughput",
            rate("taskiq_tasks_completed_total", 'status=~"success|failed"', window="5m"),
            unit="ops",
            w=3,
            graph=True,
            description="Finished tasks per second (5m).",
        )
    )
    d = d.with_panel(
        stat_panel(
            "Failure ratio (5m)",
            failure_ratio("5m"),
            unit="percentunit",
            w=3,
            decimals=1,
            steps=[(None, "green"), (0.01, "orange"), (0.05, "red")],
            no_value="-",
        )
    )
    d = d.with_panel(
        stat_panel(
            "Success rate (24h)",
            success_ratio("24h"),
            unit="percentunit",
            w=3,
            decimals=2,
            steps=RATIO_STEPS,
            no_value="-",
        )
    )
    d = d.with_panel(
        stat_panel(
            "Monitoring errors (1h)",
            'sum(increase(taskiq_monitor_errors_total{job=~"$job"}[1h]))',
            w=3,
            description="Failures of the monitoring itself (details in the Monitoring row).",
            steps=[(None, "green"), (1, "red")],
        )
    )

    # Health cards: one row per task type. Grafana repeats the row and the panels below it.
    d = d.with_row(dash.Row("$task_name").repeat("task_name"))
    history = dashboard_url(CONFIG.history_uid, "var-task_name=${task_name}&var-status=failed")
    detail = dashboard_url(CONFIG.task_detail_uid, "var-task_name=${task_name}")
    d = d.with_panel(
        stat_panel(
            "Pending",
            pending(),
            steps=PENDING_STEPS,
            links=[data_link("Task detail", detail)],
        )
    )
    d = d.with_panel(
        stat_panel("Running", f"sum(taskiq_tasks_running{{{TASK_MATCH}}})", links=[data_link("Task detail", detail)])
    )
    d = d.with_panel(
        stat_panel(
            "Success (range)",
            completed("success", "$__range"),
            decimals=0,
            steps=[(None, "green")],
            links=[data_link("Task detail", detail)],
        )
    )
    d = d.with_panel(
        stat_panel(
            "Failed (range)",
            completed("failed", "$__range"),
            decimals=0,
            steps=[(None, "green"), (1, "red")],
            links=[data_link("Failed runs in History & errors", history)],
        )
    )
    d = d.with_panel(
        stat_panel(
            "Success rate (24h)",
            success_ratio("24h"),
            unit="percentunit",
            decimals=2,
            steps=RATIO_STEPS,
            no_value="-",
        )
    )
    d = d.with_panel(
        stat_panel(
            "Avg duration (24h)",
            avg_duration("24h"),
            unit="s",
            decimals=3,
            description="sum(duration of successful runs) / count(successful runs), 24h.",
            no_value="-",
        )
    )

    d = d.with_row(dash.Row("Throughput & failures"))
    d = d.with_panel(
        ts_panel(
            "Throughput by task",
            [prom(rate("taskiq_tasks_completed_total", 'status="success"', by="task_name"), "{{task_name}}")],
            unit="ops",
            stack=True,
            description="Successful completions per second.",
        )
    )
    d = d.with_panel(
        ts_panel(
            "Failure ratio by task",
            [prom(failure_ratio("$__rate_interval", by="task_name"), "{{task_name}}")],
            unit="percentunit",
            description="failed / (success + failed); retried attempts excluded.",
        )
    )
    d = d.with_panel(
        ts_panel(
            "Enqueued vs started",
            [
                prom(rate("taskiq_tasks_enqueued_total"), "enqueued", ref="A"),
                prom(rate("taskiq_tasks_started_total"), "started", ref="B"),
            ],
            unit="ops",
            description="Enqueued (app side, job taskiq-app) against started (workers).",
        )
    )
    d = d.with_panel(
        ts_panel(
            "Failures by task",
            [prom(rate("taskiq_tasks_completed_total", 'status="failed"', by="task_name"), "{{task_name}}")],
            unit="ops",
            stack=True,
            bars=True,
        )
    )

    d = d.with_row(dash.Row("Queue & concurrency"))
    d = d.with_panel(
        ts_panel(
            "Queue depth (pending)",
            [prom(pending(by="task_name"), "{{task_name}}")],
            w=8,
            stack=True,
        )
    )
    d = d.with_panel(
        ts_panel(
            "Oldest pending age",
            [
                prom(
                    f"max by (task_name) (taskiq_task_oldest_pending_age_seconds{{{TASK_MATCH}}})",
                    "{{task_name}}",
                )
            ],
            unit="s",
            w=8,
        )
    )
    d = d.with_panel(
        ts_panel(
            "Running",
            [
                prom(f"sum by (task_name) (taskiq_tasks_running{{{TASK_MATCH}}})", "{{task_name}}"),
                prom(WORKERS, "workers", ref="B"),
            ],
            w=8,
        )
    )

    d = d.with_row(dash.Row("Latency"))
    d = d.with_panel(
        ts_panel(
            "Duration percentiles (exemplars)",
            [
                prom(quantile(0.5, "taskiq_task_duration_seconds"), "p50", ref="A", exemplar=True),
                prom(quantile(0.95, "taskiq_task_duration_seconds"), "p95", ref="B", exemplar=True),
                prom(quantile(0.99, "taskiq_task_duration_seconds"), "p99", ref="C", exemplar=True),
            ],
            unit="s",
            description="Exemplars link to traces (trace_id → Tempo) where the exporter attaches them.",
        )
    )
    d = d.with_panel(
        ts_panel(
            "p95 duration by task",
            [
                prom(
                    quantile(0.95, "taskiq_task_duration_seconds", by="le, task_name"),
                    "{{task_name}}",
                    exemplar=True,
                )
            ],
            unit="s",
        )
    )
    d = d.with_panel(
        ts_panel(
            "Queue wait percentiles",
            [
                prom(quantile(0.5, "taskiq_task_queue_wait_seconds"), "p50", ref="A"),
                prom(quantile(0.95, "taskiq_task_queue_wait_seconds"), "p95", ref="B"),
            ],
            unit="s",
            description="Time from .kiq() to start of execution.",
        )
    )
    d = d.with_panel(
        ts_panel(
            "Average duration by task",
            [
                prom(
                    f"sum by (task_name) (rate(taskiq_task_duration_seconds_sum"
                    f'{{{TASK_MATCH}, status="success"}}'
                    f"[$__rate_interval])) / sum by (task_name) (rate(taskiq_task_duration_seconds_count"
                    f'{{{TASK_MATCH}, status="success"}}[$__rate_interval]))',
                    "{{task_name}}",
                )
            ],
            unit="s",
        )
    )

    d = d.with_row(dash.Row("Monitoring"))
    d = d.with_panel(
        ts_panel(
            "Monitoring errors by component",
            [
                prom(
                    'sum by (component) (rate(taskiq_monitor_errors_total{job=~"$job"}[$__rate_interval]))',
                    "{{component}}",
                )
            ],
            unit="ops",
            w=8,
            description="The exporter's own failures (Loki push, Redis state, hooks); should stay at zero.",
        )
    )
    d = d.with_panel(
        ts_panel(
            "Event records by result",
            [
                prom(
                    'sum by (result) (rate(taskiq_monitor_log_records_total{job=~"$job"}[$__rate_interval]))',
                    "{{result}}",
                )
            ],
            unit="ops",
            w=8,
            stack=True,
            description="Records shipped to Loki, spooled to disk while Loki is unreachable, or dropped.",
        )
    )
    d = d.with_panel(
        ts_panel(
            "Shipper backlog",
            [
                prom('sum(taskiq_monitor_log_queue_records{job=~"$job"})', "in memory (records)", ref="A"),
                prom('sum(taskiq_monitor_log_spool_bytes{job=~"$job"})', "spool (bytes)", ref="B"),
            ],
            w=8,
        )
    )
    d = d.with_panel(
        ts_panel(
            "State store up",
            [prom('min by (instance) (taskiq_monitor_state_up{job=~"$job"})', "{{instance}}")],
            w=6,
            description="1 while the exporter can read the shared task state (Redis); 0 for 5m fires "
            "TaskiqStateStoreDown. Queue depth, workers and the live feed need it.",
        )
    )
    d = d.with_panel(
        ts_panel(
            "State events by result",
            [
                prom(
                    'sum by (result) (rate(taskiq_monitor_state_events_total{job=~"$job"}[$__rate_interval]))',
                    "{{result}}",
                )
            ],
            unit="ops",
            w=6,
            stack=True,
            description="Task events written to the state store, or dropped while it was unreachable and the "
            "buffer full (TaskiqLiveStateDropping).",
        )
    )
    d = d.with_panel(
        ts_panel(
            "Live feed clients",
            [prom('sum by (instance) (taskiq_monitor_live_clients{job=~"$job"})', "{{instance}}")],
            w=6,
            description="WebSocket clients of the live feed, per exporter.",
        )
    )
    d = d.with_panel(
        ts_panel(
            "Expired pending entries",
            [
                prom(
                    "max by (task_name) (increase(taskiq_tasks_pending_expired_total"
                    f"{{{TASK_MATCH}}}[$__rate_interval]))",
                    "{{task_name}}",
                )
            ],
            w=6,
            bars=True,
            description="Pending entries older than the pending horizon, expired: lost messages. Queue-wide "
            "(max over exporters).",
        )
    )
    return d


def task_detail() -> dash.Dashboard:
    d = base(
        CONFIG.task_detail_uid,
        "TaskIQ / Task detail",
        "One task type in depth: throughput, outcomes, exception types, retries, latency, recent failures.",
        "30s",
    )
    d = (
        d.with_variable(var_datasource())
        .with_variable(var_loki_datasource())
        .with_variable(var_job())
        .with_variable(var_task_name(multi=False))
        .with_variable(var_service_name())
    )
    history = dashboard_url(CONFIG.history_uid, "var-task_name=${task_name}")

    d = d.with_row(dash.Row("$task_name"))
    d = d.with_panel(
        stat_panel(
            "Throughput",
            rate("taskiq_tasks_completed_total", 'status=~"success|failed"', window="5m"),
            unit="ops",
            graph=True,
        )
    )
    d = d.with_panel(
        stat_panel(
            "Success rate (24h)",
            success_ratio("24h"),
            unit="percentunit",
            decimals=2,
            steps=RATIO_STEPS,
            no_value="-",
        )
    )
    d = d.with_panel(
        stat_panel(
            "Failed (range)",
            completed("failed", "$__range"),
            w=3,
            decimals=0,
            steps=[(None, "green"), (1, "red")],
            links=[data_link("Failures in History & errors", history + "&var-status=failed")],
        )
    )
    d = d.with_panel(
        stat_panel(
            "Retried (range)",
            completed("retried", "$__range"),
            w=3,
            decimals=0,
            steps=[(None, "green"), (1, "orange")],
        )
    )
    d = d.with_panel(stat_panel("Running", f"sum(taskiq_tasks_running{{{TASK_MATCH}}})", w=3))
    d = d.with_panel(stat_panel("Pending", pending(), w=3))
    d = d.with_panel(stat_panel("p95 duration", quantile(0.95, "taskiq_task_duration_seconds"), unit="s", no_value="-"))

    d = d.with_row(dash.Row("Outcomes"))
    d = d.with_panel(
        ts_panel(
            "Completions by status",
            [prom(rate("taskiq_tasks_completed_total", by="status"), "{{status}}")],
            unit="ops",
            stack=True,
            description="success / failed / retried (intermediate attempts re-kicked by a retry middleware).",
        )
    )
    d = d.with_panel(
        ts_panel(
            "Retries",
            [
                prom(rate("taskiq_tasks_completed_total", 'status="retried"'), "retried/s", ref="A"),
                prom(
                    rate("taskiq_tasks_completed_total", 'status="retried"')
                    + " / "
                    + rate("taskiq_tasks_started_total"),
                    "retried / started",
                    ref="B",
                ),
            ],
            unit="short",
            description="Attempts that ended in a retry, absolute and relative to starts.",
        )
    )
    d = d.with_panel(
        ts_panel(
            "Exception types",
            [prom(rate("taskiq_task_errors_total", by="error_type"), "{{error_type}}")],
            unit="ops",
            stack=True,
            bars=True,
        )
    )
    d = d.with_panel(
        bargauge.Panel()
        .title("Exception types (range)")
        .datasource(prom_ds())
        .with_target(
            prom(
                f"sort_desc(sum by (error_type) (increase(taskiq_task_errors_total{{{TASK_MATCH}}}[$__range])))",
                "{{error_type}}",
                instant=True,
            )
        )
        .span(12)
        .height(8)
        .decimals(0)
        .orientation(cm.VizOrientation.HORIZONTAL)
        .display_mode(cm.BarGaugeDisplayMode.BASIC)
        .thresholds(thresholds((None, "red")))
    )

    d = d.with_row(dash.Row("Latency"))
    d = d.with_panel(
        ts_panel(
            "Duration by status (exemplars)",
            [
                prom(
                    quantile(0.5, "taskiq_task_duration_seconds", by="le, status"),
                    "p50 {{status}}",
                    ref="A",
                    exemplar=True,
                ),
                prom(
                    quantile(0.95, "taskiq_task_duration_seconds", by="le, status"),
                    "p95 {{status}}",
                    ref="B",
                    exemplar=True,
                ),
            ],
            unit="s",
        )
    )
    d = d.with_panel(
        ts_panel(
            "Queue wait",
            [
                prom(quantile(0.5, "taskiq_task_queue_wait_seconds"), "p50", ref="A"),
                prom(quantile(0.95, "taskiq_task_queue_wait_seconds"), "p95", ref="B"),
                prom(f"max(taskiq_task_oldest_pending_age_seconds{{{TASK_MATCH}}})", "oldest pending", ref="C"),
            ],
            unit="s",
        )
    )

    d = d.with_row(dash.Row("Recent failures"))
    d = d.with_panel(
        logs.Panel()
        .title("Recent failures of $task_name")
        .datasource(loki_ds())
        .with_target(
            logql(
                f'{{{LOKI_SELECTOR}, status=~"failed|retried"}} | json'
                ' | line_format "{{.error_type}}: {{.error_message}}'
                ' task_id={{.task_id}} trace_id={{.trace_id}}"',
                max_lines=200,
            )
        )
        .span(24)
        .height(10)
        .show_time(True)
        .wrap_log_message(True)
        .enable_log_details(True)
        .sort_order(cm.LogsSortOrder.DESCENDING)
    )
    return d


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
    d = d.with_panel(stat_panel("Pending", pending()))
    d = d.with_panel(stat_panel("Running", f"sum(taskiq_tasks_running{{{TASK_MATCH}}})"))
    d = d.with_panel(
        stat_panel("Started (1m)", f"sum(increase(taskiq_tasks_started_total{{{TASK_MATCH}}}[1m]))", decimals=0)
    )
    d = d.with_panel(stat_panel("Succeeded (1m)", completed("success", "1m"), decimals=0, steps=[(None, "green")]))
    d = d.with_panel(
        stat_panel("Failed (1m)", completed("failed", "1m"), decimals=0, steps=[(None, "green"), (1, "red")])
    )
    d = d.with_panel(
        stat_panel("Retried (1m)", completed("retried", "1m"), decimals=0, steps=[(None, "green"), (1, "orange")])
    )

    d = d.with_panel(
        ts_panel(
            "Events by status",
            [
                logql(
                    f'sum by (status) (count_over_time({{{LOKI_SELECTOR}, status=~"$status"}} [$__auto]))',
                    legend="{{status}}",
                    metric=True,
                )
            ],
            w=24,
            h=7,
            stack=True,
            bars=True,
            ds=loki_ds(),
        )
    )

    d = d.with_row(dash.Row("Event stream"))
    d = d.with_panel(
        logs.Panel()
        .title("Recent events")
        .description("Newest first. Expand a line for task_id / trace_id (structured metadata) and the trace link.")
        .datasource(loki_ds())
        .with_target(
            logql(
                f'{{{LOKI_SELECTOR}, status=~"$status"}} | json'
                ' | line_format "{{.status | upper}} {{.task_name}} task_id={{.task_id}} attempt={{.attempt}}'
                ' duration={{.duration_seconds}}s {{.error_type}}"',
                max_lines=500,
            )
        )
        .span(24)
        .height(18)
        .show_time(True)
        .show_labels(False)
        .wrap_log_message(False)
        .enable_log_details(True)
        .sort_order(cm.LogsSortOrder.DESCENDING)
    )
    return d


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


def history() -> dash.Dashboard:
    d = base(
        CONFIG.history_uid,
        "TaskIQ / History & errors",
        "Filterable task history (Loki events, 50-row pages) and error investigation with traceback, "
        "parameters and trace links.",
        "1m",
        time_from="now-24h",
    )
    d = (
        d.with_variable(var_loki_datasource())
        .with_variable(var_datasource())
        .with_variable(var_job())
        .with_variable(var_task_name())
        .with_variable(var_status(EVENT_STATUSES))
        .with_variable(var_service_name())
        .with_variable(var_search())
    )

    selector = f'{{{LOKI_SELECTOR}, status=~"$status"}} |= "$search" | json'
    organize = {
        "id": "organize",
        "options": {
            "indexByName": {name: i for i, name in enumerate(HISTORY_COLUMNS)},
            "excludeByName": {
                "Time": True,
                "schema_version": True,
                "args": True,
                "kwargs": True,
                "labels": True,
                "traceback": True,
                "span_id": True,
                "enqueued_at": True,
                "started_at": True,
                "finished_at": True,
            },
            "renameByName": {},
        },
    }
    extract = {
        "id": "extractFields",
        "options": {"source": "Line", "format": "json", "replace": True, "keepTime": True},
    }
    d = d.with_row(dash.Row("History"))
    d = d.with_panel(
        table.Panel()
        .title("Task history")
        .description(
            "One row per state change. Filters: Task, Status, and the text box (task id or error). "
            "The table pages by panel height: sized for 50 rows a page."
        )
        .datasource(loki_ds())
        .with_target(logql(f"{selector}", max_lines=5000))
        .with_transformation(dm.DataTransformerConfig(id_val="extractFields", options=extract["options"]))
        .with_transformation(dm.DataTransformerConfig(id_val="organize", options=organize["options"]))
        .span(24)
        .height(51)
        .cell_height(cm.TableCellHeight.SM)
        .show_header(True)
        .filterable(True)
        .footer(common.TableFooterOptions().show(False).reducer(["count"]).enable_pagination(True))
        .sort_by([common.TableSortByFieldState().display_name("timestamp").desc(True)])
        .override_by_name("trace_id", [dm.DynamicConfigValue(id_val="links", value=[trace_link()])])
        .override_by_name(
            "task_id",
            [
                dm.DynamicConfigValue(
                    id_val="links",
                    value=[
                        {
                            "title": "Show this task's events",
                            "url": dashboard_url(CONFIG.history_uid, "var-search=${__value.raw}&var-status=All"),
                        }
                    ],
                )
            ],
        )
        .override_by_name(
            "status",
            [
                dm.DynamicConfigValue(
                    id_val="mappings",
                    value=[
                        {
                            "type": "value",
                            "options": {
                                "success": {"color": "green", "index": 0},
                                "failed": {"color": "red", "index": 1},
                                "retried": {"color": "orange", "index": 2},
                                "running": {"color": "blue", "index": 3},
                                "pending": {"color": "text", "index": 4},
                            },
                        }
                    ],
                ),
                dm.DynamicConfigValue(id_val="custom.cellOptions", value={"type": "color-text"}),
            ],
        )
        .override_by_name("duration_seconds", [dm.DynamicConfigValue(id_val="unit", value="s")])
        .override_by_name("queue_wait_seconds", [dm.DynamicConfigValue(id_val="unit", value="s")])
    )

    d = d.with_row(dash.Row("Errors"))
    err_selector = f'{{{LOKI_SELECTOR}, status=~"failed|retried"}} |= "$search" | json'
    d = d.with_panel(
        table.Panel()
        .title("Errors: message, parameters, traceback")
        .datasource(loki_ds())
        .with_target(logql(err_selector, max_lines=1000))
        .with_transformation(dm.DataTransformerConfig(id_val="extractFields", options=extract["options"]))
        .with_transformation(
            dm.DataTransformerConfig(
                id_val="organize",
                options={
                    "indexByName": {
                        n: i
                        for i, n in enumerate(
                            [
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
                        )
                    },
                    "excludeByName": {
                        "Time": True,
                        "schema_version": True,
                        "labels": True,
                        "span_id": True,
                        "enqueued_at": True,
                        "started_at": True,
                        "finished_at": True,
                        "status": True,
                        "worker": True,
                        "queue_wait_seconds": True,
                    },
                    "renameByName": {},
                },
            )
        )
        .span(24)
        .height(16)
        .cell_height(cm.TableCellHeight.LG)
        .filterable(True)
        .footer(common.TableFooterOptions().show(False).reducer(["count"]).enable_pagination(True))
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
        .override_by_name("trace_id", [dm.DynamicConfigValue(id_val="links", value=[trace_link()])])
    )
    d = d.with_panel(
        logs.Panel()
        .title("Error detail (traceback and parameters)")
        .description(
            "Each failure rendered as message, parameters and the full stack trace. Expand a line: "
            "trace_id links to the trace."
        )
        .datasource(loki_ds())
        .with_target(
            logql(
                f'{{{LOKI_SELECTOR}, status=~"failed|retried"}} |= "$search"'
                ' | json task_id="task_id", error_type="error_type", error_message="error_message",'
                ' traceback="traceback", args="args", kwargs="kwargs", trace_id="trace_id", attempt="attempt"'
                ' | line_format "{{.task_name}} [{{.task_id}}] attempt {{.attempt}}: {{.error_type}}: '
                "{{.error_message}}\\nargs={{.args}} kwargs={{.kwargs}}"
                ' trace_id={{.trace_id}}\\n{{.traceback}}"',
                max_lines=200,
            )
        )
        .span(24)
        .height(20)
        .show_time(True)
        .wrap_log_message(True)
        .enable_log_details(True)
        .sort_order(cm.LogsSortOrder.DESCENDING)
    )
    d = d.with_panel(
        ts_panel(
            "Errors by type (Loki)",
            [
                logql(
                    f'sum by (error_type) (count_over_time({{{LOKI_SELECTOR}, status="failed"}} |= "$search"'
                    f' | json error_type="error_type" [$__auto]))',
                    legend="{{error_type}}",
                    metric=True,
                )
            ],
            w=24,
            h=7,
            stack=True,
            bars=True,
            ds=loki_ds(),
        )
    )
    return d


DASHBOARDS = {
    f"{CONFIG.overview_uid}.json": overview,
    f"{CONFIG.task_detail_uid}.json": task_detail,
    f"{CONFIG.live_uid}.json": live,
    f"{CONFIG.history_uid}.json": history,
}


def _number_panels(model: dict[str, Any]) -> dict[str, Any]:
    """Give every panel a stable id (Grafana requires unique ids; the SDK assigns none)."""
    next_id = 1
    for panel in model.get("panels", []):
        panel["id"] = next_id
        next_id += 1
        for inner in panel.get("panels", []):
            inner["id"] = next_id
            next_id += 1
    return model


# The SDK writes the interval-variable keys auto/auto_count/auto_min on *every* variable. They are not
# in @grafana/schema's VariableModel (additionalProperties: false), and Grafana ignores them elsewhere.
_INTERVAL_ONLY_KEYS = ("auto", "auto_count", "auto_min")


def _strip_sdk_extras(model: dict[str, Any]) -> dict[str, Any]:
    for variable in model.get("templating", {}).get("list", []):
        if variable.get("type") != "interval":
            for key in _INTERVAL_ONLY_KEYS:
                variable.pop(key, None)
    return model


def render(builder: dash.Dashboard) -> str:
    model = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    model = _number_panels(_strip_sdk_extras(model))
    return json.dumps(model, indent=2, sort_keys=True) + "\n"


def generate() -> dict[str, str]:
    """Return {file name: JSON text} for every dashboard."""
    return {name: render(factory()) for name, factory in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if committed JSON differs")
    parser.add_argument("--out", type=Path, default=DASHBOARDS_DIR)
    args = parser.parse_args(argv)
    stale = []
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in generate().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("stale dashboards (run python grafana/generate.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
