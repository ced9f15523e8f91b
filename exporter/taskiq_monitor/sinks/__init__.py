"""Event sinks: where task events go after the middleware built (and redacted) them.

``default_sinks`` builds the sinks the settings ask for; each sink module adds itself here.
"""

from __future__ import annotations

from taskiq_monitor.events import EventSink
from taskiq_monitor.settings import Settings


def default_sinks(settings: Settings) -> list[EventSink]:
    sinks: list[EventSink] = []
    if settings.loki_url:
        from taskiq_monitor.sinks.loki import LokiSink

        sinks.append(LokiSink(settings))
    return sinks
