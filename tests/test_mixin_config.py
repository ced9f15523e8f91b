"""taskiq_monitor.mixin.config: the one Config of the dashboards, rules and web UI, importable at run time."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from taskiq_monitor.mixin.config import CONFIG, Config, duration_seconds

_IMPORTED_BY_THE_CONFIG = """
import json, sys
import taskiq_monitor
before = set(sys.modules)
import taskiq_monitor.mixin
from taskiq_monitor.mixin.config import CONFIG
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def _modules_imported_by_the_config() -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORTED_BY_THE_CONFIG], capture_output=True, text=True, timeout=60, check=True
    )
    return list(json.loads(proc.stdout))


def test_config_and_package_import_only_the_standard_library() -> None:
    """The exporter imports the config at run time; the generators' dev-only dependencies must stay out of it."""
    added = _modules_imported_by_the_config()
    assert "taskiq_monitor.mixin.config" in added
    foreign = [
        name
        for name in added
        if name.split(".")[0] not in sys.stdlib_module_names and not name.startswith("taskiq_monitor.mixin")
    ]
    assert foreign == []
    assert not [
        name for name in added if name.startswith(("taskiq_monitor.mixin.dashboards", "taskiq_monitor.mixin.rules"))
    ]


def test_health_thresholds_of_the_web_ui_contract() -> None:
    # Values the web UI's health badge and the docs state (contracts: "Health thresholds").
    assert CONFIG.failure_ratio_threshold == 0.10
    assert CONFIG.failure_min_volume == 10
    assert CONFIG.backlog_min_pending == 100
    assert CONFIG.oldest_pending_max_age_seconds == 600
    assert CONFIG.success_ratio_warning == 0.9
    assert CONFIG.retry_ratio_threshold == 0.5
    assert dataclasses.is_dataclass(Config) and Config.__dataclass_params__.frozen  # type: ignore[attr-defined]


def test_success_colour_turns_red_where_the_failure_alert_fires() -> None:
    assert CONFIG.success_ratio_warning == pytest.approx(1 - CONFIG.failure_ratio_threshold)


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        CONFIG.backlog_min_pending = 5  # type: ignore[misc]


def test_dashboard_uids_are_distinct() -> None:
    assert len(set(CONFIG.dashboard_uids)) == 4


def test_default_config_is_valid() -> None:
    CONFIG.validate()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"failure_ratio_window": "5 minutes"}, "unsupported duration"),
        ({"ratio_windows": ("5m", "1hour")}, "unsupported duration"),
        ({"success_ratio_warning": 0.995}, "success_ratio_warning <= success_ratio_ok"),
        ({"backlog_critical_pending": 50}, "backlog_critical_pending"),
        ({"oldest_pending_warning_seconds": 900}, "oldest_pending_max_age_seconds"),
    ],
)
def test_validate_rejects_bad_windows_and_contradicting_thresholds(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(CONFIG, **change).validate()  # type: ignore[arg-type]


def test_duration_seconds() -> None:
    assert duration_seconds("5m") == 300
    assert duration_seconds("24h") == 86400
    assert duration_seconds("250ms") == 0.25
    with pytest.raises(ValueError):
        duration_seconds("1h30m")
