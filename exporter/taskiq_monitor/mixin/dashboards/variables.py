"""Template variables shared by the dashboards (datasources, job, task type, status, Loki service, search)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.models import dashboard as dm

from taskiq_monitor.mixin.config import CONFIG
from taskiq_monitor.mixin.dashboards.panels import prom_ds


def var_datasource() -> dash.DatasourceVariable:
    return (
        dash.DatasourceVariable("datasource")
        .label("Prometheus")
        .type("prometheus")
        .current(dm.VariableOption(selected=True, text="Prometheus", value=CONFIG.prometheus_datasource_uid))
    )


def var_loki_datasource() -> dash.DatasourceVariable:
    return (
        dash.DatasourceVariable("loki_datasource")
        .label("Loki")
        .type("loki")
        .current(dm.VariableOption(selected=True, text="Loki", value=CONFIG.loki_datasource_uid))
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


def var_status(values: Sequence[str]) -> dash.CustomVariable:
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
