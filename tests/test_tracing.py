"""Tracing: taskiq's OpenTelemetry spans, trace ids in event records, trace-id exemplars on the duration histogram."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")
pytest.importorskip("taskiq.middlewares.opentelemetry_middleware")  # needs taskiq[opentelemetry] (psutil, wrapt)

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from taskiq import InMemoryBroker
from taskiq.middlewares.opentelemetry_middleware import OpenTelemetryMiddleware

from taskiq_monitor import MonitoringMiddleware, Settings
from taskiq_monitor.exemplars import load_exemplars
from taskiq_monitor.metricsdir import prepare_directory
from taskiq_monitor.service.collectors import CombinedSource, MultiProcessSource
from taskiq_monitor.tracing import current_ids, instrument_broker, otlp_traces_url, setup_tracing
from tests.recording_sink import RecordingSink

REPO = Path(__file__).resolve().parents[1]
TASK = "score_message_task"


def make_provider(**kwargs: Any) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(**kwargs)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def run_one_task(
    provider: TracerProvider | None, *, fail: bool = False
) -> tuple[CollectorRegistry, RecordingSink]:
    registry = CollectorRegistry()
    sink = RecordingSink()
    broker = InMemoryBroker(await_inplace=True).with_middlewares(
        MonitoringMiddleware(Settings(), registry=registry, sinks=[sink])
    )
    if provider is not None:
        instrument_broker(broker, tracer_provider=provider)

    @broker.task(task_name=TASK)
    async def score(x: int) -> int:
        if fail:
            raise ValueError("bad message")
        return x

    await broker.startup()
    await score.kiq(1)
    await broker.shutdown()
    return registry, sink


def hexid(value: int, width: int) -> str:
    return format(value, f"0{width}x")


def bucket_exemplars(exposition: str) -> list[tuple[dict[str, str], Any]]:
    found = []
    for family in text_string_to_metric_families(exposition):
        if family.name == "taskiq_task_duration_seconds":
            for sample in family.samples:
                if sample.name.endswith("_bucket") and sample.exemplar is not None:
                    found.append((sample.labels, sample.exemplar))
    return found


async def test_send_and_execute_spans_share_trace_with_event_records_and_exemplar() -> None:
    provider, exporter = make_provider()
    registry, sink = await run_one_task(provider)

    spans = {s.name: s for s in exporter.get_finished_spans()}
    send, execute = spans[f"send/{TASK}"], spans[f"execute/{TASK}"]
    assert send.kind is trace.SpanKind.PRODUCER
    assert execute.kind is trace.SpanKind.CONSUMER
    assert execute.context.trace_id == send.context.trace_id
    assert execute.parent is not None and execute.parent.span_id == send.context.span_id
    trace_id = hexid(send.context.trace_id, 32)

    by_status = {e.status: e for e in sink.events}
    assert set(by_status) == {"pending", "running", "success"}
    assert by_status["pending"].trace_id == trace_id
    assert by_status["pending"].span_id == hexid(send.context.span_id, 16)
    for status in ("running", "success"):
        assert by_status[status].trace_id == trace_id
        assert by_status[status].span_id == hexid(execute.context.span_id, 16)
    # The context travelled in the message labels (W3C traceparent), not only in-process.
    assert trace_id in by_status["running"].labels["traceparent"]

    exemplars = bucket_exemplars(openmetrics_latest(registry).decode())
    assert len(exemplars) == 1
    labels, exemplar = exemplars[0]
    assert labels["task_name"] == TASK and labels["status"] == "success"
    assert exemplar.labels == {"trace_id": trace_id, "span_id": hexid(execute.context.span_id, 16)}
    assert exemplar.value == pytest.approx(by_status["success"].duration_seconds)


async def test_failed_task_exemplar_on_failed_series() -> None:
    provider, exporter = make_provider()
    registry, sink = await run_one_task(provider, fail=True)
    execute = next(s for s in exporter.get_finished_spans() if s.name.startswith("execute/"))
    failed = next(e for e in sink.events if e.status == "failed")
    assert failed.trace_id == hexid(execute.context.trace_id, 32)
    [(labels, exemplar)] = bucket_exemplars(openmetrics_latest(registry).decode())
    assert labels["status"] == "failed"
    assert exemplar.labels["trace_id"] == failed.trace_id


async def test_no_span_means_no_ids_and_no_exemplar() -> None:
    assert current_ids() == (None, None)
    registry, sink = await run_one_task(None)
    assert sink.events and all(e.trace_id is None and e.span_id is None for e in sink.events)
    exposition = openmetrics_latest(registry).decode()
    assert "taskiq_task_duration_seconds_bucket" in exposition
    assert bucket_exemplars(exposition) == []


async def test_unsampled_trace_gives_no_ids() -> None:
    # A dropped trace never reaches Tempo: an exemplar or a log link to it would be dead.
    provider, exporter = make_provider(sampler=ALWAYS_OFF)
    registry, sink = await run_one_task(provider)
    assert exporter.get_finished_spans() == ()
    assert all(e.trace_id is None for e in sink.events)
    assert bucket_exemplars(openmetrics_latest(registry).decode()) == []


def test_instrument_broker_twice_adds_one_middleware() -> None:
    provider, _ = make_provider()
    broker = InMemoryBroker().with_middlewares(MonitoringMiddleware(Settings(), registry=CollectorRegistry(), sinks=[]))
    assert instrument_broker(broker, tracer_provider=provider) is True
    assert instrument_broker(broker, tracer_provider=provider) is False
    otel = [m for m in broker.middlewares if isinstance(m, OpenTelemetryMiddleware)]
    assert len(otel) == 1
    assert broker.middlewares[0] is otel[0]  # first: its execute span is current in our pre_execute
    assert otel[0].broker is broker


def test_setup_tracing_exports_to_configured_endpoint_with_service_name() -> None:
    settings = Settings(otlp_endpoint="http://tempo:4318", service_name="billing", env="staging")
    provider = setup_tracing(settings, set_global=False)
    try:
        assert provider.resource.attributes["service.name"] == "billing"
        assert provider.resource.attributes["deployment.environment"] == "staging"
        [processor] = provider._active_span_processor._span_processors
        exporter = processor._batch_processor._exporter
        assert exporter._endpoint == "http://tempo:4318/v1/traces"
    finally:
        provider.shutdown()
    assert setup_tracing(Settings(), set_global=False) is None


def test_otlp_traces_url() -> None:
    assert otlp_traces_url("http://tempo:4318/") == "http://tempo:4318/v1/traces"
    assert otlp_traces_url("http://c:4318/v1/traces") == "http://c:4318/v1/traces"


def test_trace_sample_ratio_is_bounded() -> None:
    with pytest.raises(ValueError):
        Settings(trace_sample_ratio=1.5)


# -- multiprocess mode ---------------------------------------------------------------------------------------------
WORKER_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, sys, time
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from prometheus_client import values
    from taskiq import InMemoryBroker
    from taskiq_monitor import MonitoringMiddleware, Settings
    from taskiq_monitor.tracing import instrument_broker

    assert values.ValueClass is not values.MutexValue, "not in multiprocess mode"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    broker = InMemoryBroker(await_inplace=True).with_middlewares(MonitoringMiddleware(Settings(), sinks=[]))
    instrument_broker(broker, tracer_provider=provider)

    @broker.task(task_name="embed_message_task")
    async def embed() -> None:
        await asyncio.sleep(float(sys.argv[1]))

    async def main() -> None:
        await broker.startup()
        await embed.kiq()
        await broker.shutdown()

    asyncio.run(main())
    span = next(s for s in exporter.get_finished_spans() if s.name.startswith("execute/"))
    path = os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], f"exemplars_{os.getpid()}.json")
    deadline = time.monotonic() + 10
    while not os.path.exists(path) and time.monotonic() < deadline:  # written by the flush thread, not by us
        time.sleep(0.05)
    print(json.dumps({"trace_id": format(span.context.trace_id, "032x"),
                      "span_id": format(span.context.span_id, "016x")}), flush=True)
    os._exit(0)  # as taskiq's worker children exit: no atexit, no flush at shutdown
    """
)


def run_worker_process(metrics_dir: Path, sleep: float) -> dict[str, str]:
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), PYTHONPATH=str(REPO / "exporter"))
    proc = subprocess.run(
        [sys.executable, "-c", WORKER_SCRIPT, str(sleep)], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_exemplars_survive_multiprocess_mode(tmp_path: Path) -> None:
    metrics_dir = prepare_directory(tmp_path / "metrics", wipe=True)
    first = run_worker_process(metrics_dir, 0.002)
    second = run_worker_process(metrics_dir, 0.3)

    exposition = openmetrics_latest(CombinedSource([MultiProcessSource(metrics_dir)])).decode()
    found = {ex.labels["trace_id"]: (labels, ex) for labels, ex in bucket_exemplars(exposition)}
    assert set(found) == {first["trace_id"], second["trace_id"]}
    for ids in (first, second):
        labels, ex = found[ids["trace_id"]]
        assert labels["task_name"] == "embed_message_task" and labels["status"] == "success"
        assert ex.labels["span_id"] == ids["span_id"]
        assert ex.value <= float(labels["le"])  # the exemplar sits on the bucket its value fell into
    # Counts merged as before: two observations in total.
    families = {f.name: f for f in text_string_to_metric_families(exposition)}
    counts = [s for s in families["taskiq_task_duration_seconds"].samples if s.name.endswith("_count")]
    assert sum(s.value for s in counts if s.labels["status"] == "success") == 2


def test_newest_exemplar_wins_and_garbage_is_skipped(tmp_path: Path) -> None:
    def entry(trace_id: str, ts: float) -> dict[str, Any]:
        labels = {"le": "0.1", "status": "success", "task_name": "t"}
        ex = {"trace_id": trace_id, "span_id": "1" * 16}
        return {"name": "taskiq_task_duration_seconds_bucket", "labels": labels, "exemplar": ex, "value": 0.07,
                "timestamp": ts}  # fmt: skip

    (tmp_path / "exemplars_1.json").write_text(json.dumps([entry("a" * 32, 100.0)]))
    (tmp_path / "exemplars_2.json").write_text(json.dumps([entry("b" * 32, 200.0), {"name": "x"}]))
    (tmp_path / "exemplars_3.json").write_text("{not json")
    [exemplar] = load_exemplars(tmp_path).values()
    assert exemplar.labels["trace_id"] == "b" * 32


def test_wipe_removes_stale_exemplar_files(tmp_path: Path) -> None:
    (tmp_path / "exemplars_42.json").write_text("[]")
    (tmp_path / "counter_42.db").write_bytes(b"")
    prepare_directory(tmp_path, wipe=True)
    assert list(tmp_path.iterdir()) == []
