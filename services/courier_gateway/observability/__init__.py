"""Structured JSON logs, W3C trace context and OpenTelemetry spans, Prometheus metrics."""

from courier_gateway.observability.logs import configure_logging
from courier_gateway.observability.tracecontext import request_id, single
from courier_gateway.observability.tracing import (
    SpanHandle,
    configure_tracing,
    shutdown_tracing,
    span,
    tracing_enabled,
)

__all__ = [
    "SpanHandle",
    "configure_logging",
    "configure_tracing",
    "request_id",
    "shutdown_tracing",
    "single",
    "span",
    "tracing_enabled",
]
