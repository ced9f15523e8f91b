"""The panel library of the dashboards: queries, thresholds, links, stat / time series / table panels, the base.

Built on ``grafana-foundation-sdk`` pinned to the Grafana 11.6 flavour (``pip install
'grafana-foundation-sdk==1769699379!11.6.0'``): a plain install resolves to the 10.1 flavour, whose models differ.
The SDK validates little; the offline checks under ``tests/`` (JSON Schema from ``@grafana/schema``, LogQL grammar,
datasource uids, PromQL run against a real Prometheus) do the proving. Every threshold colour comes from
:data:`~taskiq_monitor.mixin.config.CONFIG`, the config the alerts are built from.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from grafana_foundation_sdk.builders import common, logs, loki, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import prometheus as prometheus_models

from taskiq_monitor.mixin.config import CONFIG

# The 11.6 flavour of the SDK emits schemaVersion 41 (Grafana 11.6's own); newer Grafana
# (12.x, 13.x: 42) migrates it forward on load, older versions do not understand newer numbers.
SCHEMA_VERSION = 41

Steps = Sequence[tuple[float | None, str]]

# Threshold colours, from the config the alerts are built from (so a card turns red when its alert would fire).
PENDING_STEPS: Steps = [
    (None, "green"),
    (CONFIG.backlog_min_pending, "orange"),
    (CONFIG.backlog_critical_pending, "red"),
]
OLDEST_PENDING_STEPS: Steps = [
    (None, "green"),
    (CONFIG.oldest_pending_warning_seconds, "orange"),
    (CONFIG.oldest_pending_max_age_seconds, "red"),
]
SUCCESS_RATIO_STEPS: Steps = [
    (None, "red"),
    (CONFIG.success_ratio_warning, "orange"),
    (CONFIG.success_ratio_ok, "green"),
]
FAILURE_RATIO_STEPS: Steps = [
    (None, "green"),
    (round(1 - CONFIG.success_ratio_ok, 6), "orange"),
    (CONFIG.failure_ratio_threshold, "red"),
]
# Any failure in the range is worth a look; any retry, a glance.
FAILED_STEPS: Steps = [(None, "green"), (1, "red")]
RETRIED_STEPS: Steps = [(None, "green"), (1, "orange")]


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
        q = q.format(prometheus_models.PromQueryFormat.TABLE)
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
            "datasourceUid": CONFIG.tempo_datasource_uid,
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


def base(uid: str, title: str, description: str, refresh: str, time_from: str = "now-6h") -> dash.Dashboard:
    b = (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(list(CONFIG.tags))
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .time(time_from, "now")
        .timezone("browser")
        .refresh(refresh)
        .timepicker(dash.TimePicker().refresh_intervals(list(CONFIG.refresh_intervals)))
        .link(
            dash.DashboardLink("TaskIQ")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags(list(CONFIG.tags))
            .as_dropdown(False)
            .include_vars(True)
            .keep_time(True)
        )
    )
    b.build().schema_version = SCHEMA_VERSION
    return b


def success_rate_stat(expr: str, window: str, **options: Any) -> stat.Panel:
    """The success-rate stat, coloured like the health table (red below the failure-ratio alert's line)."""
    return stat_panel(
        f"Success rate ({window})",
        expr,
        unit="percentunit",
        decimals=2,
        steps=SUCCESS_RATIO_STEPS,
        no_value="-",
        **options,
    )


def loki_bars(title: str, expr: str, legend: str) -> timeseries.Panel:
    """A full-width stacked bar chart of a LogQL metric query (event counts over time)."""
    return ts_panel(title, [logql(expr, legend=legend, metric=True)], w=24, h=7, stack=True, bars=True, ds=loki_ds())


def logs_panel(
    title: str,
    expr: str,
    *,
    max_lines: int,
    h: int,
    description: str = "",
    wrap: bool = True,
    labels: bool | None = None,
) -> logs.Panel:
    """A full-width Loki logs panel, newest first, each line expandable (structured metadata, the trace link)."""
    p = logs.Panel().title(title)
    if description:
        p = p.description(description)
    p = p.datasource(loki_ds()).with_target(logql(expr, max_lines=max_lines)).span(24).height(h).show_time(True)
    if labels is not None:
        p = p.show_labels(labels)
    return p.wrap_log_message(wrap).enable_log_details(True).sort_order(cm.LogsSortOrder.DESCENDING)


def assemble(d: dash.Dashboard, variables: list[Any], sections: list[tuple[str, list[Any]]]) -> dash.Dashboard:
    """Add the variables, then each (row title, panels) section in order."""
    for variable in variables:
        d = d.with_variable(variable)
    for title, panels in sections:
        d = d.with_row(dash.Row(title))
        for panel in panels:
            d = d.with_panel(panel)
    return d
