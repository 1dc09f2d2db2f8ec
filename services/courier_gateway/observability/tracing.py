"""OpenTelemetry tracing, configured by the standard ``OTEL_*`` variables, free when off.

Tracing is on when an OTLP endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) or ``OTEL_TRACES_EXPORTER`` names an exporter
(``otlp``, ``console``), and ``OTEL_SDK_DISABLED`` is not true. The OTLP transport follows
``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` or ``OTEL_EXPORTER_OTLP_PROTOCOL``: ``http/protobuf``
(the default) or ``grpc``; another value stops the process with a message naming the variable.
Everything else the SDK reads itself (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
headers, sampler…).

When off, :func:`span` does no OpenTelemetry work at all: it only mints a span id so the
``traceparent`` handed on (queue labels, downstream requests) still carries the trace id.
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = [
    "OTLP_PROTOCOLS",
    "SpanHandle",
    "configure_tracing",
    "otlp_protocol",
    "shutdown_tracing",
    "span",
    "tracing_enabled",
]

#: The OTLP transports the exporter supports (the SDK has no http/json span exporter).
OTLP_PROTOCOLS = ("http/protobuf", "grpc")

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_state: dict[str, Any] = {"tracer": None, "provider": None}


@dataclass(frozen=True, slots=True)
class SpanHandle:
    """The ids of the current span, and the ``traceparent`` that makes it the parent."""

    trace_id: str
    span_id: str
    sampled: bool = True

    @property
    def traceparent(self) -> str:
        """W3C ``traceparent`` with this span as the parent."""
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


def tracing_enabled() -> bool:
    """Whether spans are recorded and exported."""
    return _state["tracer"] is not None


def _wanted(environ: dict[str, str]) -> bool:
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = environ.get("OTEL_TRACES_EXPORTER", "").lower()
    if exporter == "none":
        return False
    endpoint = environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    )
    return bool(endpoint) or exporter in {"otlp", "console"}


def otlp_protocol(environ: dict[str, str]) -> str:
    """The OTLP transport the environment asks for; ConfigError naming the variable otherwise."""
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = environ.get(name, "").strip().lower()
        if value:
            if value not in OTLP_PROTOCOLS:
                from courier_gateway.config import ConfigError

                raise ConfigError(
                    f"{name}: {value!r} is not supported; use one of {', '.join(OTLP_PROTOCOLS)}"
                )
            return value
    return "http/protobuf"


def configure_tracing(service: str) -> bool:
    """Install the SDK's tracer provider when the environment asks for it; return whether on."""
    environ = dict(os.environ)
    if not _wanted(environ):
        return False
    protocol = otlp_protocol(environ)
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", service)})
    provider = TracerProvider(resource=resource)
    exporter: SpanExporter
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").lower() == "console":
        exporter = ConsoleSpanExporter()
    elif protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcSpanExporter,
        )

        exporter = GrpcSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _state["provider"] = provider
    _state["tracer"] = provider.get_tracer("courier_gateway")
    return True


def shutdown_tracing() -> None:
    """Flush and stop the exporter (at process exit)."""
    provider = _state["provider"]
    if provider is not None:
        provider.shutdown()


def _parse(traceparent: str | None) -> tuple[str, str, bool] | None:
    if not traceparent:
        return None
    match = _TRACEPARENT.match(traceparent.strip())
    if not match or match.group(1) == "0" * 32 or match.group(2) == "0" * 16:
        return None
    return match.group(1), match.group(2), int(match.group(3), 16) & 1 == 1


# Ids need to be unique and random, not secret (W3C trace context): a generator seeded from the
# OS once per process costs far less than a getrandom system call per request.
_ids = random.Random()  # noqa: S311
os.register_at_fork(after_in_child=_ids.seed)  # a forked child must not repeat its parent's ids


def _new_trace_id() -> str:
    return f"{_ids.getrandbits(128) or 1:032x}"


def _new_span_id() -> str:
    return f"{_ids.getrandbits(64) or 1:016x}"


class _Untraced:
    """The span stand-in when tracing is off: no OpenTelemetry work, just fresh ids."""

    __slots__ = ("handle",)

    def __init__(self, handle: SpanHandle) -> None:
        self.handle = handle

    def __enter__(self) -> SpanHandle:
        return self.handle

    def __exit__(self, *exc_info: object) -> None:
        return None


def span(
    name: str,
    *,
    parent: str | SpanHandle | None = None,
    kind: str = "internal",
    attributes: dict[str, Any] | None = None,
) -> AbstractContextManager[SpanHandle]:
    """Run a block in a span that continues ``parent`` (a ``traceparent`` or a handle).

    With no parent, the block continues the current span if there is one, else starts a trace.
    """
    if _state["tracer"] is None:
        if isinstance(parent, SpanHandle):
            return _Untraced(SpanHandle(parent.trace_id, _new_span_id(), parent.sampled))
        parsed = _parse(parent)
        trace_id, sampled = (parsed[0], parsed[2]) if parsed else (_new_trace_id(), True)
        return _Untraced(SpanHandle(trace_id, _new_span_id(), sampled))
    text = parent.traceparent if isinstance(parent, SpanHandle) else parent
    return _traced(name, text, kind, attributes)


@contextmanager
def _traced(
    name: str, parent: str | None, kind: str, attributes: dict[str, Any] | None
) -> Iterator[SpanHandle]:
    from opentelemetry.trace import SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    tracer = _state["tracer"]
    context = TraceContextTextMapPropagator().extract({"traceparent": parent}) if parent else None
    with tracer.start_as_current_span(
        name, context=context, kind=getattr(SpanKind, kind.upper()), attributes=attributes
    ) as current:
        ids = current.get_span_context()
        try:
            yield SpanHandle(f"{ids.trace_id:032x}", f"{ids.span_id:016x}", ids.trace_flags.sampled)
        except BaseException as error:
            current.set_status(Status(StatusCode.ERROR, type(error).__name__))
            raise
