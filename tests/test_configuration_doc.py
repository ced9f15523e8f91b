"""docs/configuration.md is generated from the code (tools/configuration_doc.py) and must not drift from it."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

from taskiq_monitor.settings import ENV_PREFIX, Settings

REPO = Path(__file__).resolve().parents[1]


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("configuration_doc", REPO / "tools" / "configuration_doc.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_configuration_doc_is_up_to_date() -> None:
    tool = load_tool()
    committed = (REPO / "docs" / "configuration.md").read_text()
    assert committed == tool.render(), "run: PYTHONPATH=exporter python tools/configuration_doc.py"


def test_every_setting_is_documented_with_its_default() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    rows = {m[1]: m[0] for m in re.findall(r"^(\| `(\w+)`.*)$", doc, re.M)}
    for name, info in Settings.model_fields.items():
        variable = ENV_PREFIX + name.upper()
        assert variable in rows, variable
        columns = [c.strip() for c in rows[variable].strip("|").split(" | ")]
        assert columns[3], f"{variable} has no description"
        if info.default is None:
            assert columns[2] == "unset"
        elif isinstance(info.default, int | float | str) and not isinstance(info.default, bool):
            assert columns[2] == f"`{info.default}`", variable


def test_every_compose_variable_is_documented() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    for line in (REPO / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, default = line.partition("=")
            row = next(r for r in doc.splitlines() if r.startswith(f"| `{name}` |"))
            meaning = row.strip("|").split(" | ")[2].strip()
            assert f"`{default}`" in row and meaning, name


def test_a_new_setting_makes_the_doc_stale() -> None:
    tool = load_tool()
    before = tool.render()
    Settings.model_fields["zz_probe"] = Settings.model_fields["port"]
    try:
        assert tool.render() != before
        assert "TASKIQ_MONITOR_ZZ_PROBE" in tool.render()
    finally:
        del Settings.model_fields["zz_probe"]
