"""pytest plugin: taskiq's own test suite, with ``MonitoringMiddleware`` attached to every broker it creates.

taskiq's tests exercise every broker code path (kicks, retries, results, the receiver, the scheduler, the worker
CLI, OpenTelemetry) with their own assertions. Attaching our middleware to each broker shows that monitoring never
changes a task's outcome, on paths our own tests do not think of. Loaded by ``tools/taskiq_suite/run.py``
(``make taskiq-suite``), which fetches the test suite from the sdist of the installed taskiq version.

Environment:

* ``TASKIQ_SUITE_POSITION``: ``first`` (attached when the broker is created, so before the suite's own
  middlewares: our ``pre_*`` hooks run first, our ``post_*`` last) or ``last`` (moved behind every middleware the
  suite adds).
* ``TASKIQ_SUITE_SINKS``: ``default`` (what ``Settings()`` gives: the in-process state store for an
  ``InMemoryBroker``) or ``loki`` (also shipping every event to a Loki push double on loopback).

At the end of the session the run fails, whatever taskiq's tests said, unless the middleware was attached, its hooks
saw tasks enqueued and started, and it counted none of its own errors (``taskiq_monitor_errors_total``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from taskiq.abc.broker import AsyncBroker

from taskiq_monitor.middleware import MonitoringMiddleware
from taskiq_monitor.settings import Settings

POSITIONS = ("first", "last")
SINKS = ("default", "loki")
REGISTRY = CollectorRegistry()  # one for all middlewares: their metric objects are shared (TaskMetrics.shared)


class _Attacher:
    def __init__(self, position: str, sinks: str) -> None:
        if position not in POSITIONS or sinks not in SINKS:
            raise pytest.UsageError(f"TASKIQ_SUITE_POSITION in {POSITIONS}, TASKIQ_SUITE_SINKS in {SINKS}")
        self.position = position
        self.sinks = sinks
        self.brokers = 0
        self.loki: Any = None
        self.spool = Path(tempfile.mkdtemp(prefix="taskiq-suite-spool-"))
        self._originals: dict[str, Any] = {}

    def settings(self) -> Settings:
        if self.loki is None:
            return Settings()
        return Settings(loki_url=self.loki.url, loki_spool_dir=self.spool, loki_batch_wait_seconds=0.2)

    def install(self) -> None:
        if self.sinks == "loki":
            self.loki = _load_loki_double().LokiPushDouble()
        attacher = self
        init = self._originals["__init__"] = AsyncBroker.__init__
        add = self._originals["add_middlewares"] = AsyncBroker.add_middlewares
        with_ = self._originals["with_middlewares"] = AsyncBroker.with_middlewares

        def patched_init(broker: AsyncBroker, *args: Any, **kwargs: Any) -> None:
            init(broker, *args, **kwargs)
            attacher.brokers += 1
            add(broker, MonitoringMiddleware(attacher.settings(), registry=REGISTRY))

        def patched_add(broker: AsyncBroker, *middlewares: Any) -> None:
            add(broker, *middlewares)
            attacher.reorder(broker)

        def patched_with(broker: AsyncBroker, *middlewares: Any) -> Any:
            result = with_(broker, *middlewares)
            attacher.reorder(broker)
            return result

        AsyncBroker.__init__ = patched_init  # type: ignore[method-assign]
        AsyncBroker.add_middlewares = patched_add  # type: ignore[method-assign]
        AsyncBroker.with_middlewares = patched_with  # type: ignore[method-assign]

    def reorder(self, broker: AsyncBroker) -> None:
        if self.position == "last":
            ours = [m for m in broker.middlewares if isinstance(m, MonitoringMiddleware)]
            others = [m for m in broker.middlewares if not isinstance(m, MonitoringMiddleware)]
            broker.middlewares[:] = others + ours

    def uninstall(self) -> None:
        for name, original in self._originals.items():
            setattr(AsyncBroker, name, original)
        if self.loki is not None:
            self.loki.close()

    def problems(self) -> list[str]:
        def total(name: str) -> float:
            return sum(
                sample.value for family in REGISTRY.collect() for sample in family.samples if sample.name == name
            )

        found = []
        if self.brokers == 0:
            found.append("no broker was created: the middleware was never attached")
        if total("taskiq_tasks_enqueued_total") == 0 or total("taskiq_tasks_started_total") == 0:
            found.append("the middleware's hooks saw no task enqueued or started")
        errors = total("taskiq_monitor_errors_total")
        if errors:
            found.append(f"the middleware counted {errors:.0f} errors of its own (taskiq_monitor_errors_total)")
        if self.loki is not None and (not self.loki.entries or self.loki.stats.schema_errors):
            found.append(f"Loki double: {len(self.loki.entries)} records, errors {self.loki.stats.schema_errors[:3]}")
        return found


def _load_loki_double() -> Any:
    """Our tests/loki_double.py, loaded by path: taskiq's suite has a ``tests`` package of its own."""
    path = Path(__file__).resolve().parents[2] / "tests" / "loki_double.py"
    spec = importlib.util.spec_from_file_location("taskiq_monitor_loki_double", path)
    if spec is None or spec.loader is None:
        raise pytest.UsageError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


_attacher: _Attacher | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _attacher
    _attacher = _Attacher(
        os.environ.get("TASKIQ_SUITE_POSITION", "first"), os.environ.get("TASKIQ_SUITE_SINKS", "default")
    )
    _attacher.install()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _attacher is None:
        return
    problems = _attacher.problems()
    summary = (
        f"taskiq-monitor: MonitoringMiddleware attached to {_attacher.brokers} brokers "
        f"(position {_attacher.position}, sinks {_attacher.sinks})"
    )
    print(f"\n{summary}", file=sys.stderr)
    for problem in problems:
        print(f"taskiq-monitor: FAILED: {problem}", file=sys.stderr)
    if problems and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_unconfigure(config: pytest.Config) -> None:
    if _attacher is not None:
        _attacher.uninstall()
