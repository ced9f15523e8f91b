"""The collectors behind ``/metrics``: the merged multiprocess files of all worker processes (with their exemplars),
and several collectors exposed as one."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from taskiq_monitor.exemplars import attach_exemplars, load_exemplars
from taskiq_monitor.multiproc import reap_dead_processes
from taskiq_monitor.service.scrape_budget import scrape

__all__ = ["CombinedSource", "MultiProcessSource"]


class MultiProcessSource:
    """A collector that merges the directory's files at every scrape, after reaping dead processes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.multiprocess import MultiProcessCollector

        reap_dead_processes(self.path)
        files = [str(p) for p in self.path.glob("*.db")]
        # mmap values store no exemplars; the worker processes write them to side files (see exemplars.py).
        yield from attach_exemplars(MultiProcessCollector.merge(files, accumulate=True), load_exemplars(self.path))


class CombinedSource:
    """Several collectors exposed as one (what ``generate_latest`` needs); one collect is one scrape, whose Redis
    reads share one deadline (``service/scrape_budget.py``)."""

    def __init__(self, collectors: Iterable[Collector]) -> None:
        self.collectors = list(collectors)

    def collect(self) -> Iterator[Metric]:
        with scrape():
            for collector in self.collectors:
                yield from collector.collect()
