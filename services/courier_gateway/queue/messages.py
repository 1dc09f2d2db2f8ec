"""The message on the stream: a plain taskiq message, so the worker is an ordinary taskiq task.

The ingress builds the bytes itself instead of going through ``task.kiq()``: that path validates
and re-serialises a pydantic model per event, which costs more than everything else the intake does.
The output is what taskiq's JSON formatter would produce, and the tests decode it with taskiq.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import orjson

__all__ = ["PROCESS_EVENT_TASK", "encode_event_message", "encode_message"]

PROCESS_EVENT_TASK = "courier_gateway.process_event"


def _dumps(document: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(document)
    except TypeError:
        # orjson refuses integers beyond 64 bits; the event model already does too, so this is
        # only a belt for callers that build envelopes by hand (replay of old records).
        return json.dumps(document, separators=(",", ":")).encode()


def encode_event_message(
    *,
    event: dict[str, Any],
    received_at: str,
    trace_id: str,
    traceparent: str,
    source: str,
    key_id: str,
) -> bytes:
    """Encode one newly received event as a taskiq message for :data:`PROCESS_EVENT_TASK`.

    The W3C ``traceparent`` travels in the labels (where taskiq middlewares look for context);
    the envelope in the keyword arguments carries what the worker stores with the outcome.
    """
    envelope: dict[str, Any] = {
        "event": event,
        "receivedAt": received_at,
        "traceId": trace_id,
        "source": source,
        "keyId": key_id,
    }
    return encode_message(
        envelope, {"traceparent": traceparent, "traceId": trace_id, "source": source}
    )


def encode_message(envelope: dict[str, Any], labels: dict[str, Any]) -> bytes:
    """Encode an envelope (new, retried or replayed) as a taskiq message."""
    return _dumps(
        {
            "task_id": uuid.uuid4().hex,
            "task_name": PROCESS_EVENT_TASK,
            "labels": labels,
            "labels_types": None,
            "args": [],
            "kwargs": {"envelope": envelope},
        }
    )
