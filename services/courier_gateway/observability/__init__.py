"""Structured JSON logs and W3C trace context shared by every role."""

from courier_gateway.observability.logs import configure_logging
from courier_gateway.observability.tracecontext import TraceContext

__all__ = ["TraceContext", "configure_logging"]
