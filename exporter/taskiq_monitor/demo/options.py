"""Checks of the demo's workload options, shared by ``taskiq-monitor demo`` and the compose stack's producer.

A leaf module on purpose: ``demo.workload`` imports ``demo.tasks``, which builds the broker from the settings at
import, and the demo must check its flags before it decides which broker that is.
"""

from __future__ import annotations

import math

from taskiq_monitor.errors import UsageError


def check_workload_options(*, rate: float, duration: float | None) -> None:
    """Raise :class:`UsageError` unless ``rate`` (tasks/s) is finite and positive and ``duration`` (s), when given,
    too.

    argparse's ``float`` takes ``nan`` and ``inf``. With either, the enqueue loop's pause is NaN or 0, so it never
    waits: it starves the event loop (measured: 16 570 tasks in 2 s, the in-memory workers never ran them, and they
    ended as "Task was destroyed but it is pending"). An infinite duration is "forever", which is the default.
    """
    if not (math.isfinite(rate) and rate > 0):
        raise UsageError("--rate must be a positive number of tasks per second")
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise UsageError("--duration must be a positive number of seconds")
