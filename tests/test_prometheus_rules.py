"""Prometheus config, generated rules, promtool unit tests, runbook anchors and the metric contract."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.monitoring_stack import (
    PROMETHEUS_DIR,
    PROMTOOL_TESTS_DIR,
    RULES_DIR,
    RUNBOOK,
    load_generator,
    require_binary,
    run,
)

gen = load_generator()

# The metric names of CONTRACT.md. Used when taskiq_monitor.metrics is not importable, and for the metrics
# other issues add (live-feed state, log shipping) until they are in taskiq_monitor.metrics.METRICS.
CONTRACT_METRICS = {
    "taskiq_tasks_enqueued_total": "counter",
    "taskiq_tasks_started_total": "counter",
    "taskiq_tasks_completed_total": "counter",
    "taskiq_task_errors_total": "counter",
    "taskiq_tasks_running": "gauge",
    "taskiq_task_duration_seconds": "histogram",
    "taskiq_task_queue_wait_seconds": "histogram",
    "taskiq_monitor_errors_total": "counter",
    "taskiq_tasks_pending": "gauge",
    "taskiq_task_oldest_pending_age_seconds": "gauge",
    "taskiq_workers": "gauge",
    "taskiq_monitor_log_records_total": "counter",
    "taskiq_monitor_log_queue_records": "gauge",
    "taskiq_monitor_log_spool_bytes": "gauge",
}
# Series Prometheus itself produces for every target.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def _emitted_metrics() -> dict[str, str]:
    """Metric families the exporter emits: the code's table when importable, completed by the contract."""
    metrics = dict(CONTRACT_METRICS)
    try:
        from taskiq_monitor.metrics import METRICS  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return metrics
    # TODO(lead): once the pending/worker/log-shipping metrics live in METRICS (or another importable table),
    # drop CONTRACT_METRICS here and use only the code's table.
    metrics.update({name: kind for name, (kind, _labels) in METRICS.items()})
    return metrics


def _sample_names(metrics: dict[str, str]) -> set[str]:
    names = set()
    for name, kind in metrics.items():
        names.add(name)
        if kind == "histogram":
            names.update({f"{name}_bucket", f"{name}_sum", f"{name}_count"})
    return names


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def _rules(filename: str) -> list[dict[str, Any]]:
    return [rule for group in _load(RULES_DIR / filename)["groups"] for rule in group["rules"]]


ALERTS = _rules(gen.ALERTS_FILE)
RECORDINGS = _rules(gen.RECORDING_FILE)
ALERT_NAMES = [rule["alert"] for rule in ALERTS]


def _selector_names(expr: str) -> set[str]:
    """Metric names of all vector selectors in a PromQL expression."""
    try:
        import promql_parser
    except ImportError:  # fall back to a regex over the expression without label matchers / strings
        stripped = re.sub(r'"[^"]*"', '""', expr)
        stripped = re.sub(r"\{[^}]*\}", "", stripped)
        stripped = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", stripped)
        stripped = re.sub(r"\[[^\]]*\]", "", stripped)
        tokens = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*(?!\s*\()", stripped))
        keywords = {"and", "or", "unless", "bool", "offset", "by", "on", "inf", "nan"}
        return {t for t in tokens if t.lower() not in keywords and not re.fullmatch(r"\d+[smhdwy]", t)}
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            assert node.name, f"selector without a metric name in {expr!r}"
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


# ----------------------------------------------------------------------------------------------------------
# Generated files
# ----------------------------------------------------------------------------------------------------------


def test_committed_rule_files_match_generator_output() -> None:
    for name, text in gen.build().items():
        committed = (RULES_DIR / name).read_text()
        assert committed == text, f"{name} is stale: run python prometheus/rules/generate.py"


def test_generator_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    assert gen.main(["--out-dir", str(tmp_path)]) == 0
    assert gen.main(["--check", "--out-dir", str(tmp_path)]) == 0
    path = tmp_path / gen.ALERTS_FILE
    path.write_text(path.read_text().replace("> 0.1\n", "> 0.2\n"))
    assert gen.main(["--check", "--out-dir", str(tmp_path)]) == 1


def test_grafana_url_is_configured_in_one_place() -> None:
    files = gen.build(gen.Config(grafana_url="https://grafana.example.org"))
    assert "localhost:3000" not in files[gen.ALERTS_FILE]
    assert "https://grafana.example.org/d/taskiq-overview" in files[gen.ALERTS_FILE]


def test_generator_rejects_a_malformed_window() -> None:
    with pytest.raises(ValueError, match="unsupported duration"):
        gen.build(dataclasses.replace(gen.Config(), failure_ratio_window="5 minutes"))


# ----------------------------------------------------------------------------------------------------------
# promtool
# ----------------------------------------------------------------------------------------------------------


def test_promtool_check_config() -> None:
    promtool = require_binary("promtool")
    result = run([promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout


def test_promtool_check_rules() -> None:
    promtool = require_binary("promtool")
    result = run([promtool, "check", "rules", *(str(p) for p in sorted(RULES_DIR.glob("*.yml")))])
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout
    assert f"SUCCESS: {len(RECORDINGS)} rules found" in result.stdout


def test_promtool_unit_tests_pass() -> None:
    promtool = require_binary("promtool")
    files = sorted(PROMTOOL_TESTS_DIR.glob("*.yml"))
    assert len(files) >= 2
    result = run([promtool, "test", "rules", *(str(p) for p in files)], cwd=PROMTOOL_TESTS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout + result.stderr


def test_promtool_unit_tests_catch_a_changed_threshold(tmp_path: Path) -> None:
    """The unit tests pin behaviour: rules generated with a higher failure threshold must fail them."""
    promtool = require_binary("promtool")
    rules = tmp_path / "rules"
    tests = tmp_path / "tests"
    rules.mkdir()
    shutil.copytree(PROMTOOL_TESTS_DIR, tests)
    for name, text in gen.build(dataclasses.replace(gen.Config(), failure_ratio_threshold=0.5)).items():
        (rules / name).write_text(text)
    result = run([promtool, "test", "rules", "alerts_test.yml"], cwd=tests)
    assert result.returncode != 0
    assert "TaskiqTaskHighFailureRate" in result.stdout + result.stderr


def _alert_tests() -> dict[str, list[dict[str, Any]]]:
    by_alert: dict[str, list[dict[str, Any]]] = {}
    for test in _load(PROMTOOL_TESTS_DIR / "alerts_test.yml")["tests"]:
        for case in test.get("alert_rule_test", []):
            by_alert.setdefault(case["alertname"], []).append({**case, "interval": test.get("interval", "1m")})
    return by_alert


@pytest.mark.parametrize("alert", ALERT_NAMES)
def test_each_alert_has_a_negative_case_one_step_before_it_fires(alert: str) -> None:
    cases = _alert_tests().get(alert)
    assert cases, f"no promtool alert_rule_test for {alert}"
    firing = [c for c in cases if c["exp_alerts"]]
    assert firing, f"{alert}: no case where the alert fires"
    first_firing = min(gen.duration_seconds(c["eval_time"]) for c in firing)
    step = gen.duration_seconds(cases[0]["interval"])
    negative = [c for c in cases if not c["exp_alerts"]]
    assert any(gen.duration_seconds(c["eval_time"]) == first_firing - step for c in negative), (
        f"{alert}: needs exp_alerts: [] at {first_firing - step}s, one step before it fires"
    )
    for case in firing:
        for exp in case["exp_alerts"]:
            assert set(exp["exp_annotations"]) == {"summary", "description", "runbook_url", "dashboard_url"}


def test_each_recording_rule_has_a_promql_expr_test() -> None:
    tested = {
        case["expr"].strip()
        for path in PROMTOOL_TESTS_DIR.glob("*.yml")
        for test in _load(path)["tests"]
        for case in test.get("promql_expr_test", [])
    }
    missing = [rule["record"] for rule in RECORDINGS if rule["record"] not in tested]
    assert not missing, f"recording rules without promql_expr_test: {missing}"


# ----------------------------------------------------------------------------------------------------------
# Conventions
# ----------------------------------------------------------------------------------------------------------


def test_recording_rules_are_named_level_metric_operations() -> None:
    for rule in RECORDINGS:
        assert re.fullmatch(r"[a-z_]+:taskiq_[a-z_]+:[a-z0-9_]+", rule["record"]), rule["record"]


def test_fr013_mean_duration_is_success_sum_over_success_count() -> None:
    mean24h = next(r for r in RECORDINGS if r["record"] == "task_name:taskiq_task_duration_seconds:mean24h")
    expr = mean24h["expr"]
    assert 'taskiq_task_duration_seconds_sum{job=~"taskiq|taskiq-app", status="success"}[24h]' in expr
    assert 'taskiq_task_duration_seconds_count{job=~"taskiq|taskiq-app", status="success"}[24h]' in expr
    records = {r["record"] for r in RECORDINGS}
    assert "task_name:taskiq_tasks_success:ratio_rate24h" in records  # FR-014


@pytest.mark.parametrize("rule", ALERTS, ids=ALERT_NAMES)
def test_alert_has_for_severity_and_annotations(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert re.fullmatch(r"Taskiq[A-Z][A-Za-z]+", name)
    assert gen.duration_seconds(rule["for"]) > 0
    assert rule["labels"]["severity"] in {"warning", "critical"}
    annotations = rule["annotations"]
    assert "{{" not in annotations["summary"], "summary must be static (it is used for grouping in chat)"
    assert "{{ $value" in annotations["description"] or "{{ $labels" in annotations["description"]
    assert annotations["runbook_url"] == f"docs/runbook.md#{name.lower()}"
    assert re.match(r"http://localhost:3000/d/taskiq-(overview|task-detail)\b", annotations["dashboard_url"])
    if "task_name" in rule["expr"] and "by (task_name)" in rule["expr"]:
        assert "{{ $labels.task_name }}" in annotations["description"]


def test_runbook_has_a_section_per_alert() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 _-]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOK.read_text().splitlines()
        if line.startswith("## ")
    }
    missing = [name for name in ALERT_NAMES if name.lower() not in anchors]
    assert not missing, f"docs/runbook.md lacks sections for {missing}"


def test_failure_rate_alert_has_minimum_volume_guard() -> None:
    rule = next(r for r in ALERTS if r["alert"] == "TaskiqTaskHighFailureRate")
    assert re.search(r"increase\(taskiq_tasks_completed_total\{[^}]*\}\[5m\]\)\) >= 10", rule["expr"])


# ----------------------------------------------------------------------------------------------------------
# Metric contract
# ----------------------------------------------------------------------------------------------------------


def test_selector_parser_finds_every_metric() -> None:
    expr = (
        'histogram_quantile(0.5, sum by (le) (rate(a_bucket{x="y"}[5m]))) / on (task_name) b and c:d:rate5m unless up'
    )
    assert _selector_names(expr) == {"a_bucket", "b", "c:d:rate5m", "up"}


def test_rules_reference_only_emitted_metrics() -> None:
    allowed = _sample_names(_emitted_metrics()) | PROMETHEUS_SYNTHETIC
    recorded = {rule["record"] for rule in RECORDINGS}
    unknown: dict[str, set[str]] = {}
    for rule in [*RECORDINGS, *ALERTS]:
        names = _selector_names(rule["expr"])
        assert names, f"no metric found in {rule['expr']!r}"
        bad = names - allowed - recorded
        if bad:
            unknown[rule.get("alert") or rule["record"]] = bad
    assert not unknown, f"rules use metrics the exporter does not emit: {unknown}"


def test_contract_metrics_match_code_where_both_define_them() -> None:
    try:
        from taskiq_monitor.metrics import METRICS  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        pytest.skip("taskiq_monitor.metrics is not importable (PYTHONPATH=exporter)")
    for name, (kind, _labels) in METRICS.items():
        if name in CONTRACT_METRICS:
            assert CONTRACT_METRICS[name] == kind, name
