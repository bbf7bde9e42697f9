"""OpenTelemetry traces across the bus.

Off unless ``OTEL_TRACES_EXPORTER`` is ``otlp`` (OTLP/HTTP; the exporter reads the standard
``OTEL_EXPORTER_OTLP_*`` variables) or ``console``. When off, spans are the API's no-op spans: nothing
is recorded or sent, and no trace context is put in messages.

The W3C trace context travels in the AMQP ``headers`` of every request, reply-less command and event
(:func:`inject`), and each consumer continues the trace from there (:func:`extract`): one charge point
CALL is one trace with the gateway's span and the owning service's span.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Mapping

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, TracerProvider

log = logging.getLogger(__name__)

_provider: TracerProvider | None = None

__all__ = ["SpanKind", "Status", "StatusCode", "configure_tracing", "enabled", "extract", "inject", "set_provider", "span",
           "tracer"]


def set_provider(provider: TracerProvider | None) -> None:
    """Use this provider for the CSMS's spans (None: back to the global one, a no-op unless configured)."""
    global _provider
    _provider = provider


def tracer() -> Tracer:
    return (_provider or trace.get_tracer_provider()).get_tracer("csms")


def enabled() -> bool:
    """A provider records spans: ours (:func:`set_provider`) or a global one an application installed."""
    return _provider is not None or not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


_NO_SPAN = contextlib.nullcontext()


def span(name: str, **kwargs: Any) -> Any:
    """``tracer().start_as_current_span(name, **kwargs)``, or (tracing off: the hot path of every CALL) a shared
    context manager that does nothing."""
    if not enabled():
        return _NO_SPAN
    return tracer().start_as_current_span(name, **kwargs)


def configure_tracing(exporter: str, service_name: str) -> TracerProvider | None:
    """Install a provider with the named exporter (``none``: leave tracing off)."""
    if exporter == "none":
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    provider = SdkTracerProvider(resource=Resource.create({"service.name": service_name}))
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter: Any = OTLPSpanExporter()
    else:
        span_exporter = ConsoleSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    set_provider(provider)
    log.info("traces: %s exporter, service.name %s", exporter, service_name)
    return provider


def shutdown_tracing() -> None:
    provider = _provider
    if provider is not None and hasattr(provider, "shutdown"):
        provider.shutdown()  # flushes the spans still batched


def inject(headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """``headers`` plus the current trace context (nothing is added when no span is recording)."""
    headers = dict(headers or {})
    if enabled() and trace.get_current_span().get_span_context().is_valid:
        propagate.inject(headers)
    return headers


def extract(headers: Mapping[str, Any] | None) -> Context | None:
    """The trace context a message carries, or None."""
    if not headers or "traceparent" not in headers:
        return None
    carrier = {key: value.decode() if isinstance(value, bytes) else str(value) for key, value in headers.items()
               if key in ("traceparent", "tracestate")}
    return propagate.extract(carrier)
