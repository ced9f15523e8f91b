"""Template variables shared by the dashboards (datasources, job, task type, status, Loki service, search)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models import dashboard as dm

from taskiq_monitor.mixin import promql
from taskiq_monitor.mixin.config import CONFIG
from taskiq_monitor.mixin.dashboards.panels import prom_ds
from taskiq_monitor.settings import Settings


# "All" selected: the default of every multi-value variable.
def _all() -> dm.VariableOption:
    return dm.VariableOption(selected=True, text=["All"], value=["$__all"])


def _datasource(name: str, label: str, kind: str, uid: str) -> dash.DatasourceVariable:
    return (
        dash.DatasourceVariable(name)
        .label(label)
        .type(kind)
        .current(dm.VariableOption(selected=True, text=label, value=uid))
    )


def var_datasource() -> dash.DatasourceVariable:
    return _datasource("datasource", "Prometheus", "prometheus", CONFIG.prometheus_datasource_uid)


def var_loki_datasource() -> dash.DatasourceVariable:
    return _datasource("loki_datasource", "Loki", "loki", CONFIG.loki_datasource_uid)


def _label_values(name: str, label: str, query: str) -> dash.QueryVariable:
    """A variable listing the values of a label in Prometheus, sorted, refreshed with the time range."""
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(prom_ds())
        .query({"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1})
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
    )


def var_job() -> dash.QueryVariable:
    # Worker exporters scrape as job="taskiq", the app side (.kiq()) as job="taskiq-app".
    q = f'label_values({{__name__=~"{promql.ENQUEUED}|{promql.STARTED}"}}, job)'
    return _label_values("job", "Job", q).multi(True).include_all(True).all_value(".*").current(_all())


def var_task_name(*, multi: bool = True) -> dash.QueryVariable:
    # taskiq_tasks_started_total: every registered task is exported with zeros from start.
    q = f"label_values({promql.series(promql.STARTED, CONFIG.dashboard_job_selector)}, task_name)"
    v = _label_values("task_name", "Task", q).multi(multi).include_all(multi)
    if multi:
        v = v.all_value(".*").current(_all())
    return v


def var_status(values: Sequence[str]) -> dash.CustomVariable:
    v = dash.CustomVariable("status").label("Status").values(",".join(values)).multi(True).current(_all())
    built = v.build()
    built.include_all = True
    built.all_value = ".*"
    return v


def var_service_name() -> dash.CustomVariable:
    service = Settings.model_fields["service_name"].default  # the exporter's default service_name label
    return (
        dash.CustomVariable("service_name")
        .label("Service")
        .description(f"Loki service_name stream label (TASKIQ_MONITOR service name, default {service})")
        .values(service)
        .allow_custom_value(True)
        .current(dm.VariableOption(selected=True, text=service, value=service))
    )


def var_search() -> dash.TextBoxVariable:
    return (
        dash.TextBoxVariable("search")
        .label("Task id / error contains")
        .description("Substring matched against the whole event line: task id, error type/message, traceback")
        .default_value("")
        .current(dm.VariableOption(selected=True, text="", value=""))
    )


def standard(
    *, loki: bool = False, single_task: bool = False, statuses: Sequence[str] = (), search: bool = False
) -> list[Any]:
    """The variables of a dashboard, always in the same order: datasources, job, task type, then the log filters."""
    chosen: list[Any] = [var_datasource()]
    if loki:
        chosen.append(var_loki_datasource())
    chosen += [var_job(), var_task_name(multi=not single_task)]
    if statuses:
        chosen.append(var_status(statuses))
    if loki:
        chosen.append(var_service_name())
    if search:
        chosen.append(var_search())
    return chosen
