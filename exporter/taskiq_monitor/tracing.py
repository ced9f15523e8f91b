"""Tracing: one trace id ties a task's spans, its event records and its duration exemplar together.

Spans come from taskiq's own ``OpenTelemetryMiddleware`` (``send/<task>`` PRODUCER where ``.kiq()`` runs,
``execute/<task>`` CONSUMER in the worker, context carried in the message labels as W3C ``traceparent``); this
module only wires it up and reads the current span. Install the extra and instrument the broker where you define it::

    pip install 'taskiq-monitor[tracing]'

    from taskiq_monitor import MonitoringMiddleware
    from taskiq_monitor.tracing import instrument_broker, setup_tracing

    broker = ListQueueBroker(url).with_middlewares(MonitoringMiddleware())
    setup_tracing()            # OTLP exporter to TASKIQ_MONITOR_OTLP_ENDPOINT, service.name = service_name
    instrument_broker(broker)  # puts taskiq's OpenTelemetryMiddleware first in the chain

With a span recording, :class:`~taskiq_monitor.middleware.MonitoringMiddleware` writes ``trace_id``/``span_id``
into every event record (``pending`` carries the send span, the others the execute span) and attaches them as an
exemplar to the ``taskiq_task_duration_seconds`` bucket the attempt fell into (OpenMetrics exposition only).

The one trap: the OpenTelemetry middleware must run *before* ours in ``pre_execute`` (so the execute span is
current) and after ours in ``post_execute`` (taskiq runs ``post_*`` in reverse order, so it then still is).
:func:`instrument_broker` inserts it at position 0, which gives exactly that; ``TaskiqInstrumentor().instrument()``
does the same for every broker created afterwards.

Without the extra installed, :func:`current_ids` is a constant function: nothing is paid on the hot path.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from taskiq_monitor.settings import Settings

if TYPE_CHECKING:
    from taskiq import AsyncBroker

logger = logging.getLogger(__name__)

NO_IDS: tuple[None, None] = (None, None)
OTLP_TRACES_PATH = "/v1/traces"

try:
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - exercised only without the [tracing] extra
    _trace = None  # type: ignore[assignment]


if _trace is not None:
    _get_current_span = _trace.get_current_span

    def current_ids() -> tuple[str | None, str | None]:
        """``(trace_id, span_id)`` of the current span as lowercase hex (32/16 chars), or ``(None, None)``.

        Only a recording, sampled span counts: an id whose trace never reaches the backend would be a dead link.
        """
        span = _get_current_span()
        if not span.is_recording():
            return NO_IDS
        ctx = span.get_span_context()
        if not ctx.trace_flags.sampled:
            return NO_IDS
        return format(ctx.trace_id, "032x"), format(ctx.span_id, "016x")

else:  # pragma: no cover

    def current_ids() -> tuple[str | None, str | None]:
        return NO_IDS


def tracing_available() -> bool:
    """True when OpenTelemetry and taskiq's OpenTelemetry middleware can be imported."""
    try:
        import taskiq.middlewares.opentelemetry_middleware  # noqa: F401
    except ImportError:
        return False
    return True


def otlp_traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a collector base URL (``http://tempo:4318`` → ``…/v1/traces``)."""
    endpoint = endpoint.rstrip("/")
    return endpoint if endpoint.endswith(OTLP_TRACES_PATH) else endpoint + OTLP_TRACES_PATH


def setup_tracing(settings: Settings | None = None, *, set_global: bool = True) -> Any:
    """Create a ``TracerProvider`` that exports to ``settings.otlp_endpoint`` over OTLP/HTTP; return it.

    ``service.name`` is ``settings.service_name`` (the same value as the Loki ``service_name`` label, so Grafana's
    trace-to-logs link finds the records). Sampling is parent-based with ``trace_sample_ratio`` for new traces.
    Returns ``None`` (and logs why) when no endpoint is configured. Call it in every process that runs tasks or
    calls ``.kiq()``; the batch processor's thread is re-created in forked children by the SDK itself.
    """
    settings = settings if settings is not None else Settings()
    if not settings.otlp_endpoint:
        logger.info("tracing off: TASKIQ_MONITOR_OTLP_ENDPOINT is not set")
        return None
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    attributes: dict[str, str] = {SERVICE_NAME: settings.service_name}
    if settings.env:
        attributes["deployment.environment"] = settings.env
    provider = TracerProvider(
        resource=Resource.create(attributes),
        sampler=ParentBased(TraceIdRatioBased(settings.trace_sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_traces_url(settings.otlp_endpoint))))
    if set_global:
        trace.set_tracer_provider(provider)
    return provider


def instrument_broker(broker: AsyncBroker, tracer_provider: Any = None) -> bool:
    """Put taskiq's ``OpenTelemetryMiddleware`` first in ``broker``'s chain; return False if it already was there.

    Safe to call twice (taskiq's own ``TaskiqInstrumentor.instrument_broker`` checks a misspelt attribute and would
    add a second middleware, i.e. a second pair of spans per task).
    """
    from taskiq.instrumentation import TaskiqInstrumentor
    from taskiq.middlewares.opentelemetry_middleware import OpenTelemetryMiddleware

    if any(isinstance(m, OpenTelemetryMiddleware) for m in broker.middlewares):
        return False
    TaskiqInstrumentor().instrument_broker(broker, tracer_provider=tracer_provider)
    for middleware in broker.middlewares:
        if isinstance(middleware, OpenTelemetryMiddleware):
            middleware.set_broker(broker)  # taskiq's instrumentor leaves it unset (worker CPU/memory gauges use it)
    return True
