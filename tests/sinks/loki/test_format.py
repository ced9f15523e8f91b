"""The push format (sinks/loki/format.py): entries, labels, push bodies, Retry-After."""

from __future__ import annotations

import gzip
import json
from typing import Any

from taskiq_monitor.metrics import OTHER
from taskiq_monitor.sinks.loki import PushEntry, decode_push, encode_push, gzip_body, retry_after_seconds
from taskiq_monitor.sinks.loki.format import MAX_STREAM_TASK_NAMES, EntryEncoder
from tests.loki_double import LokiPushDouble
from tests.sinks.loki.helpers import counted, event, wait


def test_records_arrive_with_bounded_labels_and_structured_metadata(loki: LokiPushDouble, make_sink: Any) -> None:
    sink, registry = make_sink(env="prod")
    for i in range(50):
        sink.emit(event(i, status="failed" if i % 10 == 0 else "success", trace_id="ab" * 16 if i == 1 else None))
    loki.wait_for(lambda d: len(d.entries) == 50, 10)
    assert not loki.stats.schema_errors
    labels = {e.labels for e in loki.entries}
    assert labels == {
        (("env", "prod"), ("service_name", "taskiq"), ("status", s), ("task_name", "score_message_task"))
        for s in ("failed", "success")
    }
    by_id = {dict(e.metadata)["task_id"]: e for e in loki.entries}
    assert dict(by_id["task-1"].metadata) == {"task_id": "task-1", "trace_id": "ab" * 16}
    record = by_id["task-0"].record
    assert record["schema_version"] == 1 and record["status"] == "failed" and record["timestamp"].endswith("Z")
    # The double has the entries before the sender has read the response and counted them.
    wait(lambda: counted(registry, "shipped") >= 50)
    assert counted(registry, "shipped") == 50 and counted(registry, "dropped") == 0


def test_retry_after_parsing() -> None:
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert 0 <= (retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") or 0) <= 0.0 + 1e-9


def test_push_body_groups_entries_by_stream_and_round_trips_through_gzip() -> None:
    ok = (("service_name", "taskiq"), ("status", "success"))
    failed = (("service_name", "taskiq"), ("status", "failed"))
    entries: list[PushEntry] = [
        (ok, "3", "three", {}),
        (failed, "1", "one", {"task_id": "x"}),
        (ok, "2", "two", {"task_id": "y"}),
    ]
    raw = encode_push(entries)
    body = json.loads(raw)
    assert [stream["stream"] for stream in body["streams"]] == [dict(ok), dict(failed)]  # one stream per label set
    assert body["streams"][0]["values"] == [["3", "three"], ["2", "two", {"task_id": "y"}]]  # metadata when present
    assert gzip.decompress(gzip_body(raw)) == raw
    assert decode_push(gzip_body(raw)) == decode_push(raw) == sorted(entries, key=lambda e: int(e[1]))


def test_task_names_beyond_the_cap_fold_into_other_in_the_label_but_not_in_the_line() -> None:
    encoder = EntryEncoder("taskiq", None)
    for i in range(MAX_STREAM_TASK_NAMES):
        encoder.entry(event(i, task=f"task_{i}"))
    (labels, _, line, _), _ = encoder.entry(event(-1, task="one_too_many"))
    assert dict(labels)["task_name"] == OTHER and json.loads(line)["task_name"] == "one_too_many"
    (labels, *_), _ = encoder.entry(event(-2, task="task_0"))
    assert dict(labels)["task_name"] == "task_0"  # a name seen before the cap keeps its stream


def test_each_task_and_status_gets_its_own_label_set_whatever_came_before() -> None:
    from taskiq_monitor.events import TaskStatus

    encoder = EntryEncoder("taskiq", "prod")
    seen = []
    for status in ("running", TaskStatus.SUCCESS, "custom-status", TaskStatus.RUNNING, "success", "custom-status"):
        for task in ("a", "b"):
            labels = dict(encoder.labels(event(0, status=status, task=task)))
            seen.append(labels)
            assert labels == {"service_name": "taskiq", "task_name": task, "status": str(status), "env": "prod"}
            assert type(labels["status"]) is str
    assert len({tuple(sorted(s.items())) for s in seen}) == 6
