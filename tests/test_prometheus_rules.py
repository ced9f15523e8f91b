"""Prometheus config, generated rules, promtool unit tests, runbook anchors and the metric contract."""

from __future__ import annotations

import dataclasses
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskiq_monitor.mixin import rules as gen
from taskiq_monitor.mixin.config import CONFIG
from tests.monitoring_stack import (
    PROMETHEUS_DIR,
    PROMTOOL_TESTS_DIR,
    RULES_DIR,
    RUNBOOK,
    require_binary,
    run,
)
from tests.promql_contract import queue_wide_aggregation_problems, sample_names, selector_names

# Series Prometheus itself produces for every target.
PROMETHEUS_SYNTHETIC = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def _rules(filename: str) -> list[dict[str, Any]]:
    return [rule for group in _load(RULES_DIR / filename)["groups"] for rule in group["rules"]]


ALERTS = _rules(gen.ALERTS_FILE)
RECORDINGS = _rules(gen.RECORDING_FILE)
ALERT_NAMES = [rule["alert"] for rule in ALERTS]


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


def test_entry_point_keeps_its_flags(tmp_path: Path) -> None:
    """prometheus/rules/generate.py is a thin script over the package: --check on the committed files passes, and
    --grafana-url / --runbook-url reach the rules (so the committed files are stale for another URL)."""
    script = str(RULES_DIR / "generate.py")
    assert run([sys.executable, script, "--check"]).returncode == 0
    other = run([sys.executable, script, "--check", "--grafana-url", "https://grafana.example.org"])
    assert other.returncode == 1 and gen.ALERTS_FILE in other.stderr
    written = run([sys.executable, script, "--out-dir", str(tmp_path), "--runbook-url", "https://runbooks/x.md"])
    assert written.returncode == 0, written.stderr
    assert "runbook_url: https://runbooks/x.md#taskiqtaskhighfailurerate" in (tmp_path / gen.ALERTS_FILE).read_text()


def test_grafana_url_is_configured_in_one_place() -> None:
    files = gen.build(gen.Config(grafana_url="https://grafana.example.org"))
    assert "localhost:3000" not in files[gen.ALERTS_FILE]
    assert f"https://grafana.example.org/d/{CONFIG.overview_uid}" in files[gen.ALERTS_FILE]


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
    uids = "|".join(re.escape(uid) for uid in (CONFIG.overview_uid, CONFIG.task_detail_uid))
    assert re.match(rf"http://localhost:3000/d/({uids})\b", annotations["dashboard_url"])
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


def test_runbook_queries_name_only_emitted_metrics_and_recorded_series() -> None:
    # An on-call engineer pastes these into Prometheus mid-incident: a renamed metric or recording rule must fail here.
    known = sample_names() | {rule["record"] for rule in RECORDINGS} | PROMETHEUS_SYNTHETIC
    queries = [
        line.strip()
        for block in re.findall(r"```promql\n(.*?)```", RUNBOOK.read_text(), re.S)
        for line in block.splitlines()
        if line.strip()
    ]
    assert len(queries) > 20, "the pattern must find the runbook's queries"
    for query in queries:
        unknown = selector_names(query) - known
        assert not unknown, f"runbook query {query!r} names {unknown}"
        assert not queue_wide_aggregation_problems(query)


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
    assert selector_names(expr) == {"a_bucket", "b", "c:d:rate5m", "up"}


def _unknown_metrics(rules: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Per rule, the metrics it reads that neither the exporter (METRICS) nor Prometheus nor a recording rule makes."""
    allowed = sample_names() | PROMETHEUS_SYNTHETIC | {rule["record"] for rule in rules if "record" in rule}
    unknown: dict[str, set[str]] = {}
    for rule in rules:
        names = selector_names(rule["expr"])
        assert names, f"no metric found in {rule['expr']!r}"
        if names - allowed:
            unknown[rule.get("alert") or rule["record"]] = names - allowed
    return unknown


def test_rules_reference_only_emitted_metrics() -> None:
    unknown = _unknown_metrics([*RECORDINGS, *ALERTS])
    assert not unknown, f"rules use metrics the exporter does not emit: {unknown}"


def test_unknown_metric_check_catches_a_metric_the_code_does_not_emit() -> None:
    rules = [
        *RECORDINGS,
        {"alert": "TaskiqTypo", "expr": "max(taskiq_worker) < 1"},  # taskiq_workers misspelt
        {"alert": "TaskiqNoSuffix", "expr": "sum(rate(taskiq_tasks_running_total[5m])) > 0"},  # a gauge
        {"alert": "TaskiqHistogram", "expr": "sum(rate(taskiq_task_duration_seconds_bucket[5m])) > 0"},
    ]
    assert _unknown_metrics(rules) == {
        "TaskiqTypo": {"taskiq_worker"},
        "TaskiqNoSuffix": {"taskiq_tasks_running_total"},
    }


def test_rules_aggregate_queue_wide_metrics_with_max() -> None:
    problems = [p for rule in [*RECORDINGS, *ALERTS] for p in queue_wide_aggregation_problems(rule["expr"])]
    assert not problems


def test_queue_wide_check_rejects_sum_and_missing_aggregation() -> None:
    assert queue_wide_aggregation_problems('sum by (task_name) (taskiq_tasks_pending{job="taskiq"}) > 100')
    assert queue_wide_aggregation_problems("taskiq_workers < 1")
    assert queue_wide_aggregation_problems("sum(increase(taskiq_tasks_pending_expired_total[10m])) > 0")
    assert not queue_wide_aggregation_problems("sum(max by (task_name) (taskiq_tasks_pending)) > 100")
