"""One metrics endpoint for all worker processes of a host (prometheus_client multiprocess mode).

Three traps of taskiq's own PrometheusMiddleware are avoided here:

* prometheus_client picks its value class when ``prometheus_client.values`` is first imported, so
  ``PROMETHEUS_MULTIPROC_DIR`` must be set before that import — the supervising CLI sets it in the environment of
  the worker command, never from inside a middleware's ``__init__``.
* Stale value files from an earlier run would keep adding their counts: the directory is wiped once, at the start
  of the run (not per child, or a restarted child would erase its siblings' counts) — see metricsdir.py, which also
  locks the directory for its supervisor and refuses a directory that is not ours.
* Each child starting its own HTTP server means the first to bind wins; instead the supervisor serves the merged
  files of all children.

A child that dies (``kill -9``, OOM) leaves its files behind. Its counters and histograms must keep counting — they
are real work done — but its ``livesum`` gauges (running tasks) must vanish: :func:`reap_dead_processes` finds the
pids of the gauge files and calls ``mark_process_dead`` for those no longer alive. A restarted child gets a new pid
and new files, so nothing is reset or counted twice.

A leaf module: it imports nothing of the package, and prometheus_client only inside functions (importing it here
would fix the value class of whoever imports this module first). The collectors that serve the directory live in
``service/collectors.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w*?_(\d+)\.db$")


def default_metrics_dir(port: int) -> Path:
    """``taskiq-monitor worker``'s directory when none is configured: one per user and port (one per supervisor)."""
    return Path(tempfile.gettempdir()) / f"taskiq-monitor-{os.getuid()}-{port}"


def multiprocess_directory() -> Path | None:
    """The directory *this process's* prometheus_client writes to, or None in single-process mode.

    Decided by the value class prometheus_client chose at its first import (the only thing that matters), and by
    prometheus_client's own variable, which it reads when it creates a value file. This is prometheus_client's
    state, not taskiq-monitor configuration: the settings' ``metrics_dir`` names the directory to *serve*.
    """
    from prometheus_client import values

    if values.ValueClass is values.MutexValue:
        return None
    directory = os.environ.get(MULTIPROC_ENV)
    return Path(directory) if directory else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    # A killed child stays a zombie until its parent reaps it; it runs no tasks any more.
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def live_gauge_pids(path: Path) -> set[int]:
    pids: set[int] = set()
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:  # `worker` binds its port before it creates the directory: nobody reports yet
        return pids
    for entry in entries:
        match = _LIVE_GAUGE_FILE.match(entry.name)
        if match:
            pids.add(int(match.group(1)))
    return pids


_REAP_LOCK = threading.Lock()


def reap_dead_processes(path: Path) -> list[int]:
    """Mark every process with live-gauge files that is no longer running as dead; return their pids.

    Needs to see the workers' processes: a sidecar in another PID namespace (a Kubernetes container without
    ``shareProcessNamespace``) would take every worker for dead — see docs/integration.md.
    """
    from prometheus_client import multiprocess

    # Concurrent scrapes (HA Prometheus pairs) would both remove the same files.
    with _REAP_LOCK:
        dead = [pid for pid in live_gauge_pids(path) if not _pid_alive(pid)]
        for pid in dead:
            with contextlib.suppress(FileNotFoundError):
                multiprocess.mark_process_dead(pid, str(path))
    return dead
