"""Exemplar side files (multiprocess mode) are private to their user, like everything else we write."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from taskiq_monitor.exemplars import ExemplarFile


def test_side_file_is_written_0600_whatever_the_umask(tmp_path: Path) -> None:
    side = ExemplarFile(tmp_path, interval=3600)
    key = ("taskiq_task_duration_seconds_bucket", (("le", "0.1"), ("status", "success"), ("task_name", "t")))
    side.record(key, {"trace_id": "a" * 32, "span_id": "b" * 16}, 0.07)
    old = os.umask(0)
    try:
        side.flush()
    finally:
        os.umask(old)
    assert stat.S_IMODE(side.path.stat().st_mode) == 0o600
    [entry] = json.loads(side.path.read_text())
    assert entry["exemplar"]["trace_id"] == "a" * 32
