"""Fixtures of the Loki sink tests: the push double (a real HTTP server on loopback) and sinks shipping to it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from taskiq_monitor.settings import Settings
from taskiq_monitor.sinks.loki import LokiSink
from tests.loki_double import LokiPushDouble
from tests.sinks.loki.helpers import FAST, MakeSink


@pytest.fixture
def loki() -> Iterator[LokiPushDouble]:
    double = LokiPushDouble()
    yield double
    double.close()


@pytest.fixture
def make_sink(loki: LokiPushDouble, tmp_path: Path) -> Iterator[MakeSink]:
    sinks: list[LokiSink] = []

    def make(**overrides: Any) -> tuple[LokiSink, CollectorRegistry]:
        registry = CollectorRegistry()
        values = {"loki_url": loki.url, "loki_spool_dir": tmp_path / "spool", **FAST, **overrides}
        sink = LokiSink(Settings(**values), registry=registry)
        sinks.append(sink)
        return sink, registry

    yield make
    for sink in sinks:
        sink.flush_sync(timeout=0.5)
