"""Trace-id exemplars on ``taskiq_task_duration_seconds``, in single-process *and* multiprocess mode.

Single process: ``Histogram.observe(value, exemplar={"trace_id": …, "span_id": …})`` — prometheus_client keeps the
latest exemplar per bucket and the OpenMetrics exposition shows it.

Multiprocess mode (``taskiq-monitor worker``): prometheus_client's mmap values drop exemplars (``set_exemplar`` is a
no-op there). So each process also keeps the latest exemplar per (series, bucket) in memory and a daemon thread
writes them, at most once per :data:`FLUSH_INTERVAL` seconds and only when something changed, to
``exemplars_<pid>.json`` in the metrics directory (write to a temporary file + ``os.replace``: a reader never sees a
half-written file). At scrape time :func:`attach_exemplars` puts the newest exemplar of every bucket, across all
processes, on the merged bucket samples. The hot path only updates a dict; no I/O happens on the event loop.

Limits, by design: an exemplar becomes visible up to ``FLUSH_INTERVAL`` s after the task finished, and a process
killed within that window loses its last unflushed exemplars (its counts are unaffected). Only the OpenMetrics
format carries exemplars; Prometheus asks for it when started with ``--enable-feature=exemplar-storage``.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Exemplar
from prometheus_client.utils import floatToGoString

from taskiq_monitor.tracing import current_ids

if TYPE_CHECKING:
    from taskiq_monitor.metrics import CoalescingWriter, DirectWriter, RawHistogram

    Writer = CoalescingWriter | DirectWriter

logger = logging.getLogger(__name__)

EXEMPLAR_FILE_GLOB = "exemplars_*.json"
FLUSH_INTERVAL = 1.0
DURATION_BUCKET_SAMPLE = "taskiq_task_duration_seconds_bucket"

# (sample name, sorted label pairs incl. "le")
_Key = tuple[str, tuple[tuple[str, str], ...]]


class ExemplarFile:
    """Latest exemplar per bucket of this process, flushed to ``exemplars_<pid>.json`` by a daemon thread."""

    def __init__(self, directory: Path, interval: float = FLUSH_INTERVAL) -> None:
        self.directory = directory
        self.interval = interval
        self._lock = threading.Lock()
        self._latest: dict[_Key, tuple[dict[str, str], float, float]] = {}
        self._dirty = False
        self._pid: int | None = None
        self._wake = threading.Event()
        # A fork while the flush thread holds the lock would leave the child's copy locked forever.
        os.register_at_fork(after_in_child=self._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.directory / f"exemplars_{os.getpid()}.json"

    def record(self, key: _Key, labels: dict[str, str], value: float) -> None:
        with self._lock:
            if self._pid != os.getpid():
                # First use in this process (or we are a forked child: the parent's entries are not ours).
                self._pid = os.getpid()
                self._latest.clear()
                self._wake = threading.Event()
                threading.Thread(target=self._run, name="taskiq-monitor-exemplars", daemon=True).start()
            self._latest[key] = (labels, value, time.time())
            self._dirty = True

    def _run(self) -> None:
        wake = self._wake
        while True:
            wake.wait(self.interval)
            wake.clear()
            try:
                self.flush()
            except Exception:
                logger.debug("cannot write exemplar file %s", self.path, exc_info=True)

    def flush(self) -> None:
        """Write this process's exemplars now (also called by the thread); a no-op when nothing changed."""
        with self._lock:
            if not self._dirty:
                return
            entries = [
                {"name": name, "labels": dict(labels), "exemplar": ex, "value": value, "timestamp": ts}
                for (name, labels), (ex, value, ts) in self._latest.items()
            ]
            self._dirty = False
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".exemplars-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(entries, out, separators=(",", ":"))
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


class DurationExemplars:
    """Observes task durations with the current trace ids as exemplar, whatever the prometheus_client mode."""

    def __init__(self) -> None:
        from taskiq_monitor.multiproc import multiprocess_directory

        directory = multiprocess_directory()
        self._file = ExemplarFile(directory) if directory is not None else None
        self._les: dict[float, str] = {}

    def observe(
        self,
        metrics: Writer,
        hist: RawHistogram,
        task_label: str,
        status: str,
        duration: float,
        ids: tuple[str | None, str | None] | None = None,
    ) -> None:
        """``ids``: the current ``(trace_id, span_id)`` when the caller has read them already."""
        metrics.observe(hist, duration)
        trace_id, span_id = current_ids() if ids is None else ids
        if trace_id is None:
            return
        exemplar = {"trace_id": trace_id, "span_id": span_id or ""}
        index = bisect.bisect_left(hist.bounds, duration)
        # Single-process value cells keep it (what Histogram.observe(exemplar=…) does); mmap cells ignore it.
        hist.buckets[index].set_exemplar(Exemplar(exemplar, duration, time.time()))
        if self._file is not None:
            bound = hist.bounds[index]
            le = self._les.get(bound)
            if le is None:
                # The exact "le" string of prometheus_client's bucket samples.
                le = self._les[bound] = str(floatToGoString(bound))  # type: ignore[no-untyped-call]
            key = (DURATION_BUCKET_SAMPLE, (("le", le), ("status", status), ("task_name", task_label)))
            self._file.record(key, exemplar, duration)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()


def load_exemplars(directory: Path) -> dict[_Key, Exemplar]:
    """The newest exemplar of every (sample, labels) across all processes' files; unreadable files are skipped."""
    newest: dict[_Key, Exemplar] = {}
    newest_ts: dict[_Key, float] = {}
    for file in directory.glob(EXEMPLAR_FILE_GLOB):
        try:
            entries = json.loads(file.read_text())
        except (OSError, ValueError):
            continue  # vanished between glob and read (replaced), or foreign content
        for entry in entries if isinstance(entries, list) else ():
            try:
                key = (str(entry["name"]), tuple(sorted((str(k), str(v)) for k, v in entry["labels"].items())))
                ts = float(entry["timestamp"])
                ex = Exemplar(dict(entry["exemplar"]), float(entry["value"]), ts)
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            if newest_ts.get(key, -1.0) < ts:
                newest[key], newest_ts[key] = ex, ts
    return newest


def attach_exemplars(metrics: Iterable[Metric], exemplars: dict[_Key, Exemplar]) -> Iterable[Metric]:
    """Yield ``metrics`` with the matching exemplars set on their bucket samples."""
    for metric in metrics:
        if exemplars and metric.type == "histogram":
            for i, sample in enumerate(metric.samples):
                if sample.name.endswith("_bucket") and sample.exemplar is None:
                    ex = exemplars.get((sample.name, tuple(sorted(sample.labels.items()))))
                    if ex is not None:
                        metric.samples[i] = sample._replace(exemplar=ex)
        yield metric
