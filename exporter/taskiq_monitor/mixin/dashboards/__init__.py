"""The TaskIQ Grafana dashboards, built from code and rendered to JSON.

One module per dashboard (:mod:`.overview`, :mod:`.task_detail`, :mod:`.live`, :mod:`.history`), each ordered
queries → panels → rows, over the panel library (:mod:`.panels`, :mod:`.variables`), the shared PromQL
(:mod:`taskiq_monitor.mixin.promql`) and the config. The JSON under ``grafana/dashboards/`` is rendered by
:func:`generate` and committed; ``grafana/generate.py`` is the entry point and the tests fail when the committed files
differ, so edit the code and regenerate instead of editing the JSON.

Dashboards query the raw metrics of the contract (no recording rules), so they work on a Prometheus that has no
rules loaded. Needs the development-only ``grafana-foundation-sdk``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog.encoder import JSONEncoder

from taskiq_monitor.mixin.config import CONFIG
from taskiq_monitor.mixin.dashboards.history import history
from taskiq_monitor.mixin.dashboards.live import live
from taskiq_monitor.mixin.dashboards.overview import overview
from taskiq_monitor.mixin.dashboards.panels import SCHEMA_VERSION
from taskiq_monitor.mixin.dashboards.task_detail import task_detail

__all__ = ["DASHBOARDS", "SCHEMA_VERSION", "generate", "main", "render"]

DASHBOARDS: dict[str, Callable[[], dash.Dashboard]] = {
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


def main(argv: list[str] | None = None, *, default_out: Path | None = None) -> int:
    """``generate.py [--check] [--out DIR]``: write the dashboards, or exit 1 if the files in DIR are stale."""
    parser = argparse.ArgumentParser(description="Generate the TaskIQ Grafana dashboards from code.")
    parser.add_argument("--check", action="store_true", help="exit 1 if committed JSON differs")
    parser.add_argument("--out", type=Path, default=default_out, required=default_out is None)
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
