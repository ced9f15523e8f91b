"""The package's one rule for repeated failures in its own hot paths: warn once per kind, then debug.

A failure of monitoring (a broken sink, Loki down, a full spool) can repeat for every task; logging a warning each
time would flood the application's log with the same line. The first occurrence of each kind is a warning (with
its traceback when asked), later ones are debug records, and the counters in ``taskiq_monitor_errors_total`` /
``taskiq_monitor_log_records_total`` carry the numbers. Example::

    warn = WarnOnce(logging.getLogger(__name__))
    warn("spool", "taskiq-monitor: spool directory %s unusable", path)
"""

from __future__ import annotations

import logging
from typing import Any


class WarnOnce:
    """Log each ``kind`` as a warning the first time, at debug level afterwards (thread-safe enough: a race logs a
    second warning at worst)."""

    __slots__ = ("_seen", "logger")

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self._seen: set[str] = set()

    def __call__(self, kind: str, message: str, *args: Any, exc_info: bool = False) -> None:
        if kind not in self._seen:
            self._seen.add(kind)
            self.logger.warning(message, *args, exc_info=exc_info)
        else:
            self.logger.debug(message, *args, exc_info=exc_info)
