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

from courier_gateway.tenancy import scoped

__all__ = [
    "PROCESS_EVENT_TASK",
    "encode_event_message",
    "encode_message",
    "ledger_id",
    "shipment_namespace_of",
    "tenant_of",
]

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
    shipment_namespace: str,
    key_id: str,
) -> bytes:
    """Encode one newly received event as a taskiq message for :data:`PROCESS_EVENT_TASK`.

    The W3C ``traceparent`` travels in the labels (where taskiq middlewares look for context);
    the envelope in the keyword arguments carries what the worker stores with the outcome:
    ``source`` is the authenticated source (the tenant), ``shipmentNamespace`` where its
    shipments live (see :mod:`courier_gateway.tenancy`).
    """
    envelope: dict[str, Any] = {
        "event": event,
        "receivedAt": received_at,
        "traceId": trace_id,
        "source": source,
        "shipmentNamespace": shipment_namespace,
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


def tenant_of(envelope: dict[str, Any]) -> str:
    """The event's tenant: the source that authenticated it (never the body's ``source``)."""
    tenant: str = envelope["source"]
    return tenant


def shipment_namespace_of(envelope: dict[str, Any]) -> str:
    """Where the event's shipment lives (envelopes from before tenancy: the tenant's own)."""
    namespace: str = envelope.get("shipmentNamespace") or tenant_of(envelope)
    return namespace


def ledger_id(envelope: dict[str, Any]) -> str:
    """The event's ledger id: its idempotency key scoped by its tenant."""
    return scoped(tenant_of(envelope), envelope["event"]["idempotencyKey"])
