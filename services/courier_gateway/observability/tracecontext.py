"""W3C trace context for a request: its ids, taken from the caller's headers or made fresh.

``traceId`` in responses and logs is the caller's ``x-request-id`` when it sends a usable one (as
the original gateway did), otherwise the W3C trace id, so logs and traces share one key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["TraceContext"]

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_REQUEST_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class TraceContext:
    """The trace this request belongs to and the span id the ingress uses for its own work."""

    trace_id: str
    span_id: str
    sampled: bool
    request_id: str | None

    @classmethod
    def from_headers(cls, traceparent: Sequence[str], request_id: Sequence[str]) -> TraceContext:
        """Continue the caller's trace when its ``traceparent`` is valid, else start a new one.

        A malformed ``traceparent`` or ``x-request-id`` is ignored rather than refused: tracing
        headers must never cost a courier its delivery.
        """
        trace_id = ""
        sampled = True
        if len(traceparent) == 1:
            match = _TRACEPARENT.match(traceparent[0].strip())
            if match and match.group(1) != _ZERO_TRACE and match.group(2) != _ZERO_SPAN:
                trace_id = match.group(1)
                sampled = int(match.group(3), 16) & 1 == 1
        if not trace_id:
            trace_id = os.urandom(16).hex()
        given = request_id[0].strip() if len(request_id) == 1 else ""
        return cls(
            trace_id=trace_id,
            span_id=os.urandom(8).hex(),
            sampled=sampled,
            request_id=given if _REQUEST_ID.match(given) else None,
        )

    @property
    def public_id(self) -> str:
        """The ``traceId`` shown to callers and written to logs."""
        return self.request_id or self.trace_id

    @property
    def traceparent(self) -> str:
        """The ``traceparent`` to hand downstream (our span as the parent)."""
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"
