"""Read the queries and datasource references out of dashboard JSON, for the offline checks.

Grafana interpolates template variables before a query reaches Prometheus or Loki; the checks do
the same with fixed stand-ins so the text can be parsed (promtool, lezer-logql) or run against a
real Prometheus::

    for q in queries(model):
        print(q.panel, q.kind, substitute(q.expr, model))
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

# Grafana's built-in interval variables, replaced by values valid for a short test run
# (a Prometheus scraping every second for tens of seconds; a Loki range query).
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__auto": "1m",
    "__range": "1m",
}

_VAR = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\[\[(\w+)\]\]|\$(\w+)")


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    kind: str  # "prometheus" | "loki"
    expr: str
    datasource_uid: str


def _panels(model: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in model.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def variables(model: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in model.get("templating", {}).get("list", [])}


def variable_value(variable: dict[str, Any]) -> str:
    """The value a query sees with the variable's default selection; 'All' and any query variable
    (whose values come from the data at run time) become a match-everything regex."""
    current = variable.get("current") or {}
    value = current.get("value", "")
    if isinstance(value, list):
        value = value[0] if len(value) == 1 else "|".join(value)
    if value == "$__all":
        return str(variable.get("allValue") or ".*")
    if variable.get("type") == "query":
        return ".*"
    return str(value)


def substitute(expr: str, model: dict[str, Any]) -> str:
    """Interpolate $var, ${var}, ${var:fmt} and [[var]] like Grafana would with default selections."""
    vars_ = variables(model)

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        if name in BUILTINS:
            return BUILTINS[name]
        if name in vars_:
            return variable_value(vars_[name])
        raise KeyError(f"undefined template variable ${name} in {expr!r}")

    return _VAR.sub(repl, expr)


def resolve_uid(uid: str, model: dict[str, Any]) -> str:
    """A datasource uid as Grafana resolves it: ${datasource} → the datasource variable's default."""
    m = re.fullmatch(r"\$\{?(\w+)\}?", uid)
    if m:
        variable = variables(model)[m.group(1)]
        return str(variable["current"]["value"])
    return uid


def queries(model: dict[str, Any]) -> Iterator[Query]:
    """Every target of every panel, with the datasource type it is sent to."""
    for panel in _panels(model):
        panel_ds = panel.get("datasource") or {}
        for target in panel.get("targets", []) or []:
            ds = target.get("datasource") or panel_ds
            kind = ds.get("type", "")
            if "expr" in target:
                yield Query(model["uid"], panel.get("title", ""), kind, target["expr"], ds.get("uid", ""))


def variable_queries(model: dict[str, Any]) -> Iterator[Query]:
    """Query-variable definitions (label_values(...)) with their datasource."""
    for v in variables(model).values():
        if v.get("type") == "query":
            q = v.get("query")
            text = q.get("query", "") if isinstance(q, dict) else str(q)
            ds = v.get("datasource") or {}
            yield Query(model["uid"], f"variable {v['name']}", ds.get("type", ""), text, ds.get("uid", ""))


def datasource_refs(model: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, uid) for every datasource reference: panels, targets, variables, data links to traces."""
    for panel in _panels(model):
        title = panel.get("title", "")
        if panel.get("datasource"):
            yield f"panel {title!r}", panel["datasource"].get("uid", "")
        for target in panel.get("targets", []) or []:
            if target.get("datasource"):
                yield f"target of {title!r}", target["datasource"].get("uid", "")
        field_config = panel.get("fieldConfig", {})
        links = list(field_config.get("defaults", {}).get("links", []) or [])
        for override in field_config.get("overrides", []):
            for prop in override.get("properties", []):
                if prop.get("id") == "links":
                    links.extend(prop.get("value") or [])
        for link in links:
            internal = link.get("internal")
            if internal:
                yield f"data link {link.get('title')!r} of {title!r}", internal.get("datasourceUid", "")
    for v in variables(model).values():
        if v.get("datasource"):
            yield f"variable {v['name']}", v["datasource"].get("uid", "")
        if v.get("type") == "datasource":
            yield f"default of variable {v['name']}", str((v.get("current") or {}).get("value", ""))


PROMQL_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """Metric families a PromQL expression reads (taskiq_* identifiers, histogram suffixes removed)."""
    names = set()
    for name in re.findall(r"\btaskiq_[a-z0-9_]+", expr):
        for suffix in PROMQL_SUFFIXES:
            if name.endswith(suffix):
                name = name[: -len(suffix)]
                break
        names.add(name)
    return names
