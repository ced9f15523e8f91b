"""Offline proofs for the Grafana dashboards and provisioning (no Grafana binary needed).

- the committed JSON is exactly what taskiq_monitor.mixin.dashboards renders (grafana/generate.py);
- (a) every dashboard validates against a JSON Schema derived from @grafana/schema (ajv, strict);
- (c) every LogQL expression parses with @grafana/lezer-logql and selects streams only by the labels the
  shipper sends;
- (d) every datasource uid a dashboard references is provisioned;
- every PromQL expression parses (promtool) and reads only metrics of the contract.

Node tooling lives in tools/grafana-validate (``npm ci`` there; the fixture runs it when node_modules is
missing).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskiq_monitor.metrics import METRICS, QUEUE_WIDE_METRICS
from taskiq_monitor.mixin import dashboards as generate
from taskiq_monitor.mixin.config import CONFIG
from tests import dashboard_queries as dq
from tests.promql_contract import queue_wide_aggregation_problems

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "grafana"
DASHBOARDS = GRAFANA / "dashboards"
PROVISIONING = GRAFANA / "provisioning"
NODE_TOOLS = ROOT / "tools" / "grafana-validate"

UIDS = set(CONFIG.dashboard_uids)
LOKI_STREAM_LABELS = {"service_name", "task_name", "status", "env"}


def _models() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


MODELS = _models()


@pytest.fixture(scope="session")
def node_tools() -> Path:
    if shutil.which("node") is None:
        pytest.fail("node is required for the dashboard schema / LogQL checks")
    if not (NODE_TOOLS / "node_modules").is_dir():
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=NODE_TOOLS,
            check=True,
            capture_output=True,
            timeout=300,
        )
    return NODE_TOOLS


def _node(args: list[str], stdin: str | None = None) -> Any:
    proc = subprocess.run(
        ["node", str(NODE_TOOLS / "validate.mjs"), *args],
        input=stdin,
        text=True,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr  # 1: something invalid, reported in the JSON
    report = json.loads(proc.stdout)
    invalid = any(report["results"].values()) if isinstance(report, dict) else any(r["errors"] for r in report)
    assert proc.returncode == int(invalid)
    return report


def _provisioned_uids() -> set[str]:
    data = yaml.safe_load((PROVISIONING / "datasources" / "datasources.yaml").read_text())
    return {ds["uid"] for ds in data["datasources"]}


# ------------------------------------------------------------------------------------------ generator


def test_committed_dashboards_match_generator_output() -> None:
    generated = generate.generate()
    committed = {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}
    assert set(committed) == set(generated), "dashboard files differ: run python grafana/generate.py"
    for name, text in generated.items():
        assert committed[name] == text, f"{name} is stale: run python grafana/generate.py"


def test_check_mode_detects_a_hand_edited_dashboard(tmp_path: Path) -> None:
    assert generate.main(["--out", str(tmp_path)]) == 0
    assert generate.main(["--check", "--out", str(tmp_path)]) == 0
    victim = tmp_path / f"{CONFIG.overview_uid}.json"
    victim.write_text(victim.read_text().replace('"TaskIQ / Overview"', '"edited"'))
    assert generate.main(["--check", "--out", str(tmp_path)]) == 1


def test_entry_point_checks_the_committed_dashboards(tmp_path: Path) -> None:
    """grafana/generate.py (what `make test` runs) is a thin script over the package and keeps --check / --out."""
    script = str(GRAFANA / "generate.py")
    assert subprocess.run([sys.executable, script, "--check"], capture_output=True, timeout=120).returncode == 0
    empty = subprocess.run(
        [sys.executable, script, "--check", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert empty.returncode == 1 and f"{CONFIG.overview_uid}.json" in empty.stderr


def test_generation_is_deterministic() -> None:
    assert generate.generate() == generate.generate()


# ------------------------------------------------------------------------------------------ structure


def test_dashboards_have_the_contract_uids_and_unique_panel_ids() -> None:
    assert {m["uid"] for m in MODELS.values()} == UIDS
    for name, model in MODELS.items():
        ids = [p["id"] for p in dq._panels(model)]
        assert len(ids) == len(set(ids)), name
        assert model["schemaVersion"] == generate.SCHEMA_VERSION


@pytest.mark.parametrize("name", sorted(MODELS))
def test_panels_fit_the_grid_without_overlapping(name: str) -> None:
    taken: set[tuple[int, int]] = set()
    for panel in dq._panels(MODELS[name]):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"]) for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


@pytest.mark.parametrize("name", sorted(MODELS))
def test_template_variables_and_refresh(name: str) -> None:
    model = MODELS[name]
    variables = dq.variables(model)
    assert {"datasource", "job", "task_name"} <= set(variables)
    assert variables["datasource"]["type"] == "datasource"
    task = variables["task_name"]
    assert task["type"] == "query"
    assert "label_values(taskiq_tasks_started_total" in task["query"]["query"]
    if model["uid"] != CONFIG.task_detail_uid:  # one task type in depth: single select there
        assert task["multi"] is True and task["includeAll"] is True
    intervals = model["timepicker"]["refresh_intervals"]
    assert intervals[0] == "5s"
    assert all(re.fullmatch(r"\d+[smhd]", i) for i in intervals)
    assert model["refresh"] in intervals


def test_status_variable_on_log_dashboards() -> None:
    for uid in (CONFIG.live_uid, CONFIG.history_uid):
        model = next(m for m in MODELS.values() if m["uid"] == uid)
        status = dq.variables(model)["status"]
        assert status["multi"] and status["includeAll"]
        assert status["query"].split(",") == ["pending", "running", "success", "failed", "retried"]


def _by_uid(uid: str) -> dict[str, Any]:
    return next(m for m in MODELS.values() if m["uid"] == uid)


def test_overview_health_cards_repeat_per_task_type() -> None:
    panels = _by_uid(CONFIG.overview_uid)["panels"]
    rows = [i for i, p in enumerate(panels) if p["type"] == "row"]
    repeated = [i for i in rows if panels[i].get("repeat") == "task_name"]
    assert len(repeated) == 1
    start = repeated[0]
    # Collapsed below the health table (issue 13 item 6): the cards travel inside the row until it is expanded.
    assert panels[start]["collapsed"] is True
    assert start == rows[1]
    cards = panels[start]["panels"]
    exprs = {p["title"]: p["targets"][0]["expr"] for p in cards}
    assert set(exprs) == {
        "Pending",
        "Running",
        "Success (range)",
        "Failed (range)",
        "Success rate (24h)",
        "Avg duration (24h)",
    }
    assert "taskiq_tasks_pending" in exprs["Pending"]
    assert "taskiq_tasks_running" in exprs["Running"]
    assert 'status="success"' in exprs["Success (range)"]
    assert 'status="failed"' in exprs["Failed (range)"]
    assert "[24h]" in exprs["Success rate (24h)"]
    avg = exprs["Avg duration (24h)"]
    assert "taskiq_task_duration_seconds_sum" in avg and "taskiq_task_duration_seconds_count" in avg
    assert avg.count('status="success"') == 2
    failed_links = next(p for p in cards if p["title"] == "Failed (range)")["fieldConfig"]["defaults"]["links"]
    assert f"/d/{CONFIG.history_uid}" in failed_links[0]["url"]


HEALTH_COLUMNS = [
    "task_name",
    "Pending",
    "Running",
    "Success (range)",
    "Failed (range)",
    f"Success rate ({CONFIG.health_window})",
    f"Avg duration ({CONFIG.health_window})",
]


def _health_table() -> dict[str, Any]:
    panels = _by_uid(CONFIG.overview_uid)["panels"]
    first = next(p for p in panels if p["type"] != "row")
    assert first["title"] == "Health by task type"
    return first


def _override(panel: dict[str, Any], field: str) -> dict[str, Any]:
    override = next(o for o in panel["fieldConfig"]["overrides"] if o["matcher"] == {"id": "byName", "options": field})
    return {prop["id"]: prop["value"] for prop in override["properties"]}


def test_overview_opens_with_a_health_table_row_per_task_type() -> None:
    table = _health_table()
    assert table["type"] == "table" and table["gridPos"]["y"] <= 1 and table["gridPos"]["w"] == 24
    targets = table["targets"]
    assert [t["refId"] for t in targets] == ["A", "B", "C", "D", "E", "F"]
    assert all(t["instant"] and t["format"] == "table" for t in targets)
    # One row per task type: every column query is grouped by task_name, merged on it, Time dropped.
    assert all("by (task_name)" in t["expr"] for t in targets)
    merge, organize = table["transformations"]
    assert merge["id"] == "merge" and organize["id"] == "organize"
    options = organize["options"]
    assert options["excludeByName"] == {"Time": True}
    assert sorted(options["indexByName"], key=options["indexByName"].get) == HEALTH_COLUMNS
    renamed = {f"Value #{t['refId']}": t["expr"] for t in targets}
    exprs = {options["renameByName"][ref]: expr for ref, expr in renamed.items()}
    assert "taskiq_tasks_pending" in exprs["Pending"] and exprs["Pending"].startswith("max by (task_name)")
    assert "taskiq_tasks_running" in exprs["Running"]
    assert 'status="success"' in exprs["Success (range)"] and "[$__range]" in exprs["Success (range)"]
    assert 'status="failed"' in exprs["Failed (range)"]
    assert f"[{CONFIG.health_window}]" in exprs[HEALTH_COLUMNS[5]]
    avg = exprs[HEALTH_COLUMNS[6]]
    assert "taskiq_task_duration_seconds_sum" in avg and "taskiq_task_duration_seconds_count" in avg
    assert avg.count('status="success"') == 2


def _alert_expr(name: str) -> str:
    groups = yaml.safe_load((ROOT / "prometheus" / "rules" / "taskiq-alerts.yml").read_text())["groups"]
    return next(r["expr"] for g in groups for r in g["rules"] if r.get("alert") == name)


def _steps(props: dict[str, Any]) -> list[tuple[Any, str]]:
    return [(step["value"], step["color"]) for step in props["thresholds"]["steps"]]


def test_health_table_is_coloured_with_the_alert_thresholds() -> None:
    """Read back from the committed alert rules: the cell turns red / orange where the alert's line is."""
    table = _health_table()
    failure_line = float(re.search(r"\n> ([0-9.]+)\n", _alert_expr("TaskiqTaskHighFailureRate")).group(1))
    rate = _override(table, HEALTH_COLUMNS[5])
    assert rate["custom.cellOptions"]["type"] == "color-background" and rate["unit"] == "percentunit"
    assert _steps(rate) == [(None, "red"), (1 - failure_line, "orange"), (CONFIG.success_ratio_ok, "green")]
    backlog_line = float(
        re.search(r"taskiq_tasks_pending\{[^}]*\}\) > (\d+)", _alert_expr("TaskiqQueueBacklogGrowing")).group(1)
    )
    pending = _override(table, "Pending")
    assert pending["custom.cellOptions"]["type"] == "color-background"
    assert _steps(pending)[1] == (backlog_line, "orange")
    assert [color for _, color in _steps(_override(table, "Failed (range)"))] == ["green", "red"]
    # The stat cards and the fleet stats use the same colours as the table.
    cards = {p["title"]: p for row in _by_uid(CONFIG.overview_uid)["panels"] for p in row.get("panels", [])}
    card_steps = [
        (s["value"], s["color"]) for s in cards[HEALTH_COLUMNS[5]]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    ]
    assert card_steps == _steps(rate)


def test_health_table_rows_link_to_task_detail() -> None:
    table = _health_table()
    detail = f"/d/{CONFIG.task_detail_uid}?var-task_name=${{__data.fields.task_name}}&"
    assert [link["url"] for link in table["fieldConfig"]["defaults"]["links"]] == [detail + "${__url_time_range}"]
    failed_links = [link["url"] for link in _override(table, "Failed (range)")["links"]]
    assert failed_links[0].startswith(detail)
    assert failed_links[1].startswith(
        f"/d/{CONFIG.history_uid}?var-task_name=${{__data.fields.task_name}}&var-status=failed"
    )
    # The link's variable exists on the target dashboard, single-select there.
    task_variable = dq.variables(_by_uid(CONFIG.task_detail_uid))["task_name"]
    assert task_variable["multi"] is False


def test_ratios_are_the_same_expression_in_rules_and_dashboards() -> None:
    """One guarded ratio: the recorded 24h success ratio is the health table's column, selectors aside."""
    groups = yaml.safe_load((ROOT / "prometheus" / "rules" / "taskiq-recording.yml").read_text())["groups"]
    records = {r["record"]: r["expr"] for g in groups for r in g["rules"]}
    recorded = records[f"task_name:taskiq_tasks_success:ratio_rate{CONFIG.health_window}"]
    table = {t["refId"]: t["expr"] for t in _health_table()["targets"]}
    assert recorded.replace(CONFIG.selector, CONFIG.dashboard_selector) == table["E"]
    failure_alert = _alert_expr("TaskiqTaskHighFailureRate").split("\n")[0]
    assert failure_alert == records[f"task_name:taskiq_tasks_failure:ratio_rate{CONFIG.failure_ratio_window}"]
    # Every ratio over final outcomes on every dashboard carries the guard against a missing status series.
    ratios = [
        q.expr
        for model in MODELS.values()
        for q in dq.queries(model)
        if q.kind == "prometheus" and "/" in q.expr and 'status=~"success|failed"' in q.expr
    ]
    assert len(ratios) >= 5
    assert all(" or 0 * " in expr and "> 0)" in expr for expr in ratios), ratios


def test_overview_duration_percentiles_request_exemplars() -> None:
    panel = next(p for p in _by_uid(CONFIG.overview_uid)["panels"] if p["title"] == "Duration percentiles (exemplars)")
    assert all(t["exemplar"] for t in panel["targets"])


def test_task_detail_shows_exception_types_and_retries() -> None:
    exprs = [q.expr for q in dq.queries(_by_uid(CONFIG.task_detail_uid))]
    assert any("taskiq_task_errors_total" in e and "error_type" in e for e in exprs)
    assert any('status="retried"' in e for e in exprs)


def test_history_table_extracts_json_fields_and_pages() -> None:
    table = next(p for p in _by_uid(CONFIG.history_uid)["panels"] if p["title"] == "Task history")
    assert table["transformations"][0] == {
        "id": "extractFields",
        "options": {"format": "json", "keepTime": True, "replace": True, "source": "Line"},
    }
    assert table["options"]["footer"]["enablePagination"] is True
    # Grafana's table pages by panel height: 50 rows of cell height "sm" (36 px) need ~50 grid units.
    assert table["options"]["cellHeight"] == "sm" and table["gridPos"]["h"] >= 50
    expr = table["targets"][0]["expr"]
    assert 'task_name=~"$task_name"' in expr and 'status=~"$status"' in expr and '|= "$search"' in expr
    trace = next(o for o in table["fieldConfig"]["overrides"] if o["matcher"]["options"] == "trace_id")
    assert trace["properties"][0]["value"][0]["internal"]["datasourceUid"] == "tempo"


def test_error_panel_shows_traceback_and_parameters() -> None:
    panel = next(
        p for p in _by_uid(CONFIG.history_uid)["panels"] if p["title"] == "Error detail (traceback and parameters)"
    )
    expr = panel["targets"][0]["expr"]
    for field in ("traceback", "args", "kwargs", "error_message", "trace_id"):
        assert "{{." + field + "}}" in expr


# ------------------------------------------------------------------------------------------ (d) uids


def test_provisioning_datasources_have_fixed_uids_and_trace_links() -> None:
    data = yaml.safe_load((PROVISIONING / "datasources" / "datasources.yaml").read_text())
    by_uid = {ds["uid"]: ds for ds in data["datasources"]}
    assert set(by_uid) == {"prometheus", "loki", "alertmanager", "tempo"}
    assert by_uid["prometheus"]["jsonData"]["exemplarTraceIdDestinations"][0]["datasourceUid"] == "tempo"
    derived = by_uid["loki"]["jsonData"]["derivedFields"]
    assert derived and all(f["datasourceUid"] == "tempo" for f in derived)
    line_regex = next(f for f in derived if f["matcherType"] == "regex")["matcherRegex"]
    assert re.search(line_regex, '{"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}').group(1) == (
        "4bf92f3577b34da6a3ce929d0e0e4736"
    )
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "taskiq.yaml").read_text())["providers"]
    assert providers[0]["type"] == "file" and providers[0]["folder"] == "TaskIQ"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_referenced_datasource_uid_is_provisioned(name: str) -> None:
    provisioned = _provisioned_uids()
    model = MODELS[name]
    refs = list(dq.datasource_refs(model))
    assert refs
    missing = [
        (where, dq.resolve_uid(uid, model)) for where, uid in refs if dq.resolve_uid(uid, model) not in provisioned
    ]
    assert not missing


def test_uid_check_catches_an_unprovisioned_uid() -> None:
    model = json.loads(json.dumps(_by_uid(CONFIG.live_uid)))
    dq.variables(model)["loki_datasource"]["current"]["value"] = "loki-typo"
    resolved = {dq.resolve_uid(uid, model) for _, uid in dq.datasource_refs(model)}
    assert "loki-typo" in resolved and not resolved <= _provisioned_uids()


# ------------------------------------------------------------------------------------------ PromQL


def _prom_queries() -> list[tuple[str, str]]:
    out = []
    for model in MODELS.values():
        for q in [*dq.queries(model), *dq.variable_queries(model)]:
            if q.kind == "prometheus":
                out.append((f"{q.dashboard}/{q.panel}", dq.substitute(q.expr, model)))
    return out


def _contract_problems(queries: list[tuple[str, str]]) -> list[str]:
    """Metrics read that the code does not emit (METRICS), and METRICS families no dashboard shows."""
    problems = []
    used: set[str] = set()
    for where, expr in queries:
        names = dq.metric_names(expr)
        problems += [f"{where}: {name} is not emitted (not in METRICS)" for name in sorted(names - set(METRICS))]
        used |= names
    problems += [f"{name} is on no dashboard" for name in sorted(set(METRICS) - used)]
    return problems


def test_promql_reads_only_contract_metrics_and_shows_them_all() -> None:
    assert _contract_problems(_prom_queries()) == []


def test_contract_check_catches_an_unknown_and_an_unshown_metric() -> None:
    queries = [(w, e) for w, e in _prom_queries() if "taskiq_monitor_live_clients" not in e]
    queries.append(("overview/typo", 'max(taskiq_worker{job=~".*"})'))
    assert _contract_problems(queries) == [
        "overview/typo: taskiq_worker is not emitted (not in METRICS)",
        "taskiq_monitor_live_clients is on no dashboard",
    ]


def test_queue_wide_metrics_are_aggregated_with_max() -> None:
    shown = set()
    for where, expr in _prom_queries():
        if expr.startswith("label_values("):
            continue
        assert queue_wide_aggregation_problems(expr) == [], where
        shown |= dq.metric_names(expr) & QUEUE_WIDE_METRICS
    assert shown == QUEUE_WIDE_METRICS


def test_queue_wide_check_catches_a_sum_over_exporters() -> None:
    overview = _by_uid(CONFIG.overview_uid)
    workers = next(p for p in overview["panels"] if p["title"] == "Workers")["targets"][0]["expr"]
    assert queue_wide_aggregation_problems(dq.substitute(workers, overview)) == []
    assert queue_wide_aggregation_problems(dq.substitute(workers.replace("max(", "sum("), overview))


def _promtool_check(exprs: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    rules = {
        "groups": [
            {
                "name": "dashboards",
                "rules": [{"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return subprocess.run(
        ["promtool", "check", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_every_promql_expression_parses(tmp_path: Path) -> None:
    # label_values(...) is Grafana syntax, not PromQL: check its series selector instead.
    exprs = []
    for _, expr in _prom_queries():
        m = re.fullmatch(r"label_values\((.*),\s*\w+\)", expr)
        exprs.append(m.group(1) if m else expr)
    proc = _promtool_check(exprs, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{len(exprs)} rules found" in proc.stdout


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_check_rejects_a_broken_expression(tmp_path: Path) -> None:
    proc = _promtool_check(["sum(rate(taskiq_tasks_started_total[1m])"], tmp_path)
    assert proc.returncode != 0


def test_substitution_leaves_no_template_variables() -> None:
    for where, expr in _prom_queries():
        assert "$" not in expr, where
    with pytest.raises(KeyError):
        dq.substitute('rate(x{a=~"$nope"}[1m])', _by_uid(CONFIG.live_uid))


# ------------------------------------------------------------------------------------------ (a) schema


def test_dashboards_validate_against_grafana_schema(node_tools: Path, tmp_path: Path) -> None:
    schema_file = tmp_path / "dashboard.schema.json"
    files = [str(p) for p in sorted(DASHBOARDS.glob("*.json"))]
    report = _node(["schema", "--write", str(schema_file), *files])
    assert report["grafanaSchemaVersion"].startswith("13.")
    assert set(report["results"]) == set(files)
    assert report["results"] == {f: [] for f in files}
    schema = json.loads(schema_file.read_text())
    assert schema["$ref"] == "#/definitions/Dashboard"
    assert schema["definitions"]["Panel"]["additionalProperties"] is False


def test_schema_validation_rejects_invalid_dashboards(node_tools: Path, tmp_path: Path) -> None:
    model = json.loads(json.dumps(_by_uid(CONFIG.overview_uid)))
    model["panels"][1]["gridPos"] = {"x": 0, "y": 0}  # h, w missing
    model["templating"]["list"][0]["auto_min"] = "10s"  # SDK extra on a non-interval variable
    model["refreshIntervals"] = ["1s"]  # not a Dashboard property
    del model["schemaVersion"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(model))
    errors = " ".join(_node(["schema", str(bad)])["results"][str(bad)])
    for needle in (
        "gridPos must have required property 'h'",
        "auto_min",
        "refreshIntervals",
        "required property 'schemaVersion'",
    ):
        assert needle in errors


# ------------------------------------------------------------------------------------------ (c) LogQL


def _loki_queries() -> list[tuple[str, str]]:
    out = []
    for model in MODELS.values():
        for q in dq.queries(model):
            if q.kind == "loki":
                out.append((f"{q.dashboard}/{q.panel}", dq.substitute(q.expr, model)))
    return out


def _logql_problems(results: list[dict[str, Any]]) -> list[str]:
    problems = []
    for r in results:
        if r["errors"]:
            problems.append(f"{r['expr']}: {r['errors']}")
        if not r["selectors"]:
            problems.append(f"{r['expr']}: no stream selector")
        for label, _op, _value in r["selectors"]:
            if label not in LOKI_STREAM_LABELS:
                problems.append(f"{r['expr']}: stream label {label!r} is not sent by the shipper")
    return problems


def test_every_logql_expression_parses_and_selects_by_shipper_labels(node_tools: Path) -> None:
    queries = _loki_queries()
    assert len(queries) >= 6
    results = _node(["logql"], json.dumps([e for _, e in queries]))
    assert len(results) == len(queries)
    assert _logql_problems(results) == []
    for r in results:
        labels = {label for label, _, _ in r["selectors"]}
        assert "service_name" in labels and "task_name" in labels


def test_the_trace_to_logs_query_parses_and_holds_for_any_service_name(node_tools: Path) -> None:
    data = yaml.safe_load((PROVISIONING / "datasources" / "datasources.yaml").read_text())
    tempo = next(ds for ds in data["datasources"] if ds["uid"] == "tempo")
    # As Grafana runs it: "$$" is provisioning's escape of "$"; the trace id is the span's.
    query = tempo["jsonData"]["tracesToLogsV2"]["query"].replace("$$", "$")
    query = query.replace("${__trace.traceId}", "4bf92f3577b34da6a3ce929d0e0e4736")
    [result] = _node(["logql"], json.dumps([query]))
    assert _logql_problems([result]) == []
    # No label pinned to a value of a setting: a worker's TASKIQ_MONITOR_SERVICE_NAME may be anything.
    assert [(label, op) for label, op, _ in result["selectors"]] == [("task_name", "=~")]


def test_logql_check_rejects_syntax_errors_and_foreign_labels(node_tools: Path) -> None:
    bad = [
        '{service_name="taskiq" | json',
        '{task_id="abc"} | json',
        'sum by (status) (count_over_time({service_name="taskiq"} [$__auto]))',
    ]
    results = _node(["logql"], json.dumps(bad))
    problems = _logql_problems(results)
    assert any(p.startswith(bad[0]) and "error node" in p for p in problems)
    assert any("'task_id' is not sent" in p for p in problems)
    assert any(p.startswith(bad[2]) for p in problems)  # unsubstituted variable does not parse
