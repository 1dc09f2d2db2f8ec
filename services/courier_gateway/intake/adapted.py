"""The intake of a provider adapter's request: map it, write all its events at once, answer.

Verification has already passed (routes.py). Here the body is mapped by the source's adapter
(:mod:`courier_gateway.adapters`); a structural problem refuses the whole request with 400. The
mapped and unmapped events then go to Redis in **one** script call (rate limit, duplicate hints,
``XADD``), so the provider's request is acknowledged only when every one of its events is queued:
all or nothing. The answer uses the status the provider expects (many want 200, not 202).
"""

from __future__ import annotations

import time
from typing import Any

from sanic import Request
from sanic.response import HTTPResponse

from courier_gateway.adapters import Inbound, Mapped, PayloadError, Unmapped
from courier_gateway.adapters.verification import client_address
from courier_gateway.config.sources import Source
from courier_gateway.intake.responses import IntakeError, json_response
from courier_gateway.intake.state import IntakeState
from courier_gateway.observability import SpanHandle, span
from courier_gateway.observability.logs import iso_utc
from courier_gateway.observability.metrics import ADAPTER_ITEMS, DUPLICATES, ENQUEUED
from courier_gateway.queue import BatchWrite, encode_event_message
from courier_gateway.queue.intake_writer import IntakeUnavailableError
from courier_gateway.tenancy import DEFAULT_SOURCE

__all__ = ["accept_mapped", "inbound"]


def inbound(request: Request, body: bytes, trusted_proxy_header: str | None) -> Inbound:
    """What verification sees of a request: raw body, headers, query and client address."""
    headers = request.headers
    return Inbound(
        body,
        lambda name: headers.getall(name, []),
        lambda name: request.args.getlist(name, []),
        client_address(request.ip, lambda name: headers.getall(name, []), trusted_proxy_header),
    )


def _first_values(request: Request) -> dict[str, str]:
    """Headers for expressions: lower-case names, the first value of each."""
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        headers.setdefault(name.lower(), value)
    return headers


async def accept_mapped(
    state: IntakeState,
    request: Request,
    source: Source,
    *,
    key_id: str,
    request_span: SpanHandle,
    public_id: str,
    context: dict[str, Any],
) -> HTTPResponse:
    """Map a verified provider request and queue its events together."""
    adapter = source.adapter
    try:
        with span("map", parent=request_span):
            mapping = adapter.map_body(
                request.body,
                source=source.name,
                default_source=DEFAULT_SOURCE,
                headers=_first_values(request),
                query={name: values[0] for name, values in request.args.items() if values},
            )
    except PayloadError as error:
        raise IntakeError(400, "INVALID_PAYLOAD", str(error)) from None
    events = mapping.events
    ignored = mapping.ignored
    received_at = iso_utc(time.time())
    context.update(adapter=adapter.name, keyId=key_id, events=len(events), ignored=len(ignored))
    if ignored:
        ADAPTER_ITEMS.labels(source.name, "ignored").inc(len(ignored))
    items: list[dict[str, Any]] = []
    if events:
        outcomes = await _write(
            state,
            source,
            events,
            received_at=received_at,
            public_id=public_id,
            request_span=request_span,
            key_id=key_id,
        )
        for result, outcome in zip(events, outcomes, strict=True):
            duplicate = outcome.status == "duplicate"
            if duplicate:
                DUPLICATES.labels("intake").inc()
            else:
                ENQUEUED.labels(source.name).inc()
            entry: dict[str, Any] = {
                "eventId": result.event["eventId"],
                "idempotencyKey": result.event["idempotencyKey"],
                "duplicate": duplicate,
            }
            if isinstance(result, Unmapped):
                entry["unmapped"] = f"{result.check}: {result.message}"
            ADAPTER_ITEMS.labels(source.name, "unmapped" if "unmapped" in entry else "mapped").inc()
            items.append(entry)
    queued = sum(1 for item in items if not item["duplicate"])
    # A request all of whose events were seen before is counted as a duplicate request.
    context.update(status=adapter.success_status, duplicate=bool(items) and queued == 0)
    document: dict[str, Any] = {
        "acknowledged": True,
        "adapter": adapter.name,
        "traceId": public_id,
        "receivedAt": received_at,
        "queued": queued,
        "duplicates": len(items) - queued,
        "unmapped": sum(1 for item in items if "unmapped" in item),
        "ignored": [item.reason for item in ignored],
        "events": items,
    }
    return json_response(document, adapter.success_status, headers={"x-request-id": public_id})


async def _write(
    state: IntakeState,
    source: Source,
    events: list[Mapped | Unmapped],
    *,
    received_at: str,
    public_id: str,
    request_span: SpanHandle,
    key_id: str,
) -> list[Any]:
    settings = state.settings
    limit = source.rate_limit
    with span("enqueue", parent=request_span, kind="producer") as enqueue_span:
        messages = tuple(
            encode_event_message(
                event=result.event,
                received_at=received_at,
                trace_id=public_id,
                traceparent=enqueue_span.traceparent,
                source=source.name,
                shipment_namespace=source.shipment_namespace,
                key_id=key_id,
                adapter=source.adapter.name,
                unmapped=(
                    {
                        "adapter": source.adapter.name,
                        "check": result.check,
                        "message": result.message,
                        "original": result.original,
                    }
                    if isinstance(result, Unmapped)
                    else None
                ),
            )
            for result in events
        )
        batch = BatchWrite(
            messages=messages,
            idempotency_keys=tuple(r.event["idempotencyKey"] for r in events),
            tenant=source.name,
            per_second=limit.per_second if limit else 0,
            burst=limit.burst if limit else 0,
            hint_ttl=settings.dedup_hint_ttl_seconds,
        )
        try:
            outcomes = await state.writer.write_batch(batch)
        except IntakeUnavailableError as error:
            raise IntakeError(
                503,
                "INTAKE_UNAVAILABLE",
                str(error),
                retry_after=settings.intake_retry_after_seconds,
            ) from None
    if outcomes and outcomes[0].status == "limited":
        raise IntakeError(
            429,
            "RATE_LIMITED",
            f"source '{source.name}' is over its rate limit",
            retry_after=outcomes[0].retry_after,
        )
    return outcomes
