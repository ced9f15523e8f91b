"""Importing the CLI must not import prometheus_client (the multiprocess value class is fixed at import)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_cli_import_does_not_import_prometheus_client() -> None:
    code = "import sys, taskiq_monitor.cli, taskiq_monitor.demo.runner; print('prometheus_client' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(ROOT / "exporter")},
    ).stdout.strip()
    assert out == "False"


def test_public_names_resolve() -> None:
    import taskiq_monitor

    for name in taskiq_monitor.__all__:
        assert getattr(taskiq_monitor, name) is not None


def test_redis_replies_are_parsed_in_c() -> None:
    # A dependency (redis[hiredis]): a 500-entry stream read costs ~7x more CPU in redis-py's Python parser.
    from redis.connection import DefaultParser
    from redis.utils import HIREDIS_AVAILABLE

    assert HIREDIS_AVAILABLE
    assert DefaultParser.__name__ == "_HiredisParser"
