"""alertmanager/alertmanager.yml: valid, routed by severity, grouped, inhibiting, templated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from taskiq_monitor.mixin import rules as gen
from tests.monitoring_stack import ALERTMANAGER_DIR, require_binary, run

CONFIG = ALERTMANAGER_DIR / "alertmanager.yml"


def _config() -> dict[str, Any]:
    data = yaml.safe_load(CONFIG.read_text())
    assert isinstance(data, dict)
    return data


def test_amtool_check_config() -> None:
    amtool = require_binary("amtool")
    result = run([amtool, "check-config", str(CONFIG)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "1 templates" in result.stdout


def test_amtool_check_config_rejects_a_broken_route(tmp_path: Path) -> None:
    amtool = require_binary("amtool")
    config = _config()
    config["route"]["routes"][0]["receiver"] = "does-not-exist"
    broken = tmp_path / "alertmanager.yml"
    broken.write_text(yaml.safe_dump(config))
    result = run([amtool, "check-config", str(broken)])
    assert result.returncode != 0


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (
            ["alertname=TaskiqTaskHighFailureRate", "severity=critical", "task_name=score_message_task"],
            "pager",
        ),
        (["alertname=TaskiqNoWorkerAlive", "severity=critical"], "pager"),
        (["alertname=TaskiqTaskRetryStorm", "severity=warning", "task_name=x"], "team"),
        (["alertname=SomethingElse", "severity=info"], "default"),
    ],
)
def test_routes_by_severity(labels: list[str], receiver: str) -> None:
    amtool = require_binary("amtool")
    result = run([amtool, "config", "routes", "test", f"--config.file={CONFIG}", *labels])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_groups_by_alert_and_task_type() -> None:
    assert _config()["route"]["group_by"] == ["alertname", "task_name"]


def test_severities_of_the_rules_all_have_a_route() -> None:
    routed = {m for r in _config()["route"]["routes"] for m in r["matchers"]}
    for group in yaml.safe_load(gen.build()[gen.ALERTS_FILE])["groups"]:
        for rule in group["rules"]:
            assert f'severity="{rule["labels"]["severity"]}"' in routed, rule["alert"]


def test_no_worker_alive_inhibits_backlog_alerts() -> None:
    rules = _config()["inhibit_rules"]
    rule = next(r for r in rules if r["source_matchers"] == ['alertname="TaskiqNoWorkerAlive"'])
    (target,) = rule["target_matchers"]
    assert target.startswith('alertname=~"')
    targets = set(target.removeprefix('alertname=~"').removesuffix('"').split("|"))
    assert targets == {"TaskiqQueueBacklogGrowing", "TaskiqOldestPendingTooOld"}
    assert targets <= set(gen.alert_names())  # inhibits alerts that exist


def test_receivers_send_resolved_notifications() -> None:
    for receiver in _config()["receivers"]:
        for webhook in receiver.get("webhook_configs", []):
            assert webhook["send_resolved"] is True, receiver["name"]


def test_templates_render_title_and_links(tmp_path: Path) -> None:
    amtool = require_binary("amtool")
    alert = {
        "status": "firing",
        "labels": {
            "alertname": "TaskiqTaskHighFailureRate",
            "severity": "critical",
            "task_name": "score_message_task",
        },
        "annotations": {
            "summary": "A TaskIQ task type fails too often.",
            "description": "33.33% of score_message_task tasks failed over the last 5m.",
            "runbook_url": "docs/runbook.md#taskiqtaskhighfailurerate",
            "dashboard_url": "http://localhost:3000/d/taskiq-task-detail?var-task_name=score_message_task",
        },
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
    }
    data = {
        "receiver": "pager",
        "status": "firing",
        "alerts": [alert],
        "groupLabels": {"alertname": "TaskiqTaskHighFailureRate", "task_name": "score_message_task"},
        "commonLabels": alert["labels"],
        "commonAnnotations": alert["annotations"],
        "externalURL": "http://localhost:9093",
    }
    data_file = tmp_path / "data.json"
    data_file.write_text(json.dumps(data))
    result = run(
        [
            amtool,
            "template",
            "render",
            f"--template.glob={ALERTMANAGER_DIR / 'templates' / '*.tmpl'}",
            f"--template.data={data_file}",
            '--template.text={{ template "taskiq.title" . }}\n{{ template "taskiq.text" . }}',
        ]
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "[FIRING:1] TaskiqTaskHighFailureRate (score_message_task)"
    assert "*CRITICAL* A TaskIQ task type fails too often." in lines
    assert "Runbook: docs/runbook.md#taskiqtaskhighfailurerate" in lines
    assert "Dashboard: http://localhost:3000/d/taskiq-task-detail?var-task_name=score_message_task" in lines
