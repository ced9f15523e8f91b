"""Event sinks: where task events go after the middleware built (and redacted) them.

``default_sinks`` builds the sinks the settings ask for; each sink module adds itself here.
"""

from __future__ import annotations

from taskiq_monitor.events import EventSink
from taskiq_monitor.settings import Settings


def default_sinks(settings: Settings) -> list[EventSink]:
    sinks: list[EventSink] = []
    from taskiq_monitor.sinks.state import StateSink

    # Shared task state + live feed: Redis when TASKIQ_MONITOR_REDIS_URL is set, else the in-process store
    # (active only with an in-memory broker).
    sinks.append(StateSink(settings))
    if settings.workers_ship_to_loki:  # else nobody here, or the exporter from the Redis stream (loki_shipper)
        from taskiq_monitor.sinks.loki import LokiSink

        sinks.append(LokiSink(settings))
    return sinks
