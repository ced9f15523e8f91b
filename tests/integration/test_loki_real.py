"""Against a real Loki 3.x (e.g. `docker compose up loki`): runs only when ``LOKI_URL`` is set.

LOKI_URL=http://127.0.0.1:3100 pytest tests/integration/test_loki_real.py
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from taskiq_monitor.events import TaskEvent
from taskiq_monitor.settings import Settings
from taskiq_monitor.sinks.loki import LokiSink

LOKI_URL = os.environ.get("LOKI_URL")
pytestmark = pytest.mark.skipif(not LOKI_URL, reason="LOKI_URL is not set: no real Loki to test against")


def test_real_loki_accepts_records_with_structured_metadata_and_json_lines(tmp_path: Path) -> None:
    assert LOKI_URL
    service = f"taskiq-monitor-test-{uuid.uuid4().hex[:8]}"
    settings = Settings(loki_url=LOKI_URL, service_name=service, loki_spool_dir=tmp_path, loki_batch_wait_seconds=0.1)
    registry = CollectorRegistry()
    sink = LokiSink(settings, registry=registry)
    task_id = uuid.uuid4().hex
    sink.emit(
        TaskEvent(
            status="failed",
            task_id=task_id,
            task_name="score_message_task",
            timestamp=time.time(),
            error_type="ValueError",
            error_message="boom",
            trace_id="0af7651916cd43dd8448eb211c80319c",
        )
    )
    sink.flush_sync()
    assert registry.get_sample_value("taskiq_monitor_log_records_total", {"result": "shipped"}) == 1
    query = f'{{service_name="{service}", status="failed"}} | task_id="{task_id}" | json | error_type="ValueError"'
    deadline = time.monotonic() + 30
    found: list[object] = []
    while time.monotonic() < deadline and not found:
        response = httpx.get(
            f"{LOKI_URL}/loki/api/v1/query_range",
            params={"query": query, "start": str(time.time_ns() - 600 * 10**9), "limit": "10"},
            timeout=10,
        )
        response.raise_for_status()
        found = [v for stream in response.json()["data"]["result"] for v in stream["values"]]
        if not found:
            time.sleep(0.5)
    assert len(found) == 1
    line = json.loads(found[0][1])  # type: ignore[index]
    assert line["task_id"] == task_id and line["schema_version"] == 1
