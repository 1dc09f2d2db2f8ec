"""The HTTP routes: event intake, health, readiness and the OpenAPI document.

The intake handler does, in order, the cheap checks first: known source (404), JSON content type
(415), signature over the raw bytes (401), one parse and validation (400), then one Redis write
that also applies the rate limit (429) and the duplicate hint. Only a write Redis acknowledged is
answered 202; a write that failed or timed out is a 503 and the event is not acknowledged.
"""

from __future__ import annotations

import logging
import os
import time
from importlib import resources
from typing import Any

import yaml
from prometheus_client import CONTENT_TYPE_LATEST
from sanic import Blueprint, Request
from sanic.response import HTTPResponse, raw

from courier_gateway.adapters import VerificationError
from courier_gateway.config.sources import DEFAULT_SOURCE, Scheme, Source
from courier_gateway.events import EventError, parse_event
from courier_gateway.intake.adapted import accept_mapped, inbound
from courier_gateway.intake.responses import IntakeError, error_response, json_response
from courier_gateway.intake.state import IntakeState
from courier_gateway.observability import SpanHandle, request_id, single, span
from courier_gateway.observability.logs import iso_utc, log_line
from courier_gateway.observability.metrics import (
    DUPLICATES,
    ENQUEUED,
    INTAKE_LATENCY,
    INTAKE_REQUESTS,
    LEGACY_SIGNATURES,
    SIGNATURE_FAILURES,
    render,
)
from courier_gateway.queue import WriteRequest, encode_event_message
from courier_gateway.queue.intake_writer import IntakeUnavailableError

__all__ = ["routes"]

log = logging.getLogger("courier_gateway.intake")
routes = Blueprint("intake")

_OPENAPI_YAML = resources.files("courier_gateway.intake").joinpath("openapi.yaml").read_bytes()
_OPENAPI: dict[str, Any] = yaml.safe_load(_OPENAPI_YAML)


def _state(request: Request) -> IntakeState:
    state: IntakeState = request.app.ctx.state
    return state


@routes.post("/v1/events/<source:str>")
async def receive_event(request: Request, source: str) -> HTTPResponse:
    """Verify, validate and enqueue a source's event (or a provider's batch of them)."""
    started = time.perf_counter()
    state = _state(request)
    headers = request.headers
    configured = state.keyring.get(source)
    label = source if configured is not None else "unknown"
    with span(
        "POST /v1/events/{source}",
        parent=single(headers.getall("traceparent", [])),
        kind="server",
        attributes={"courier.source": label},
    ) as request_span:
        public_id = request_id(headers.getall("x-request-id", [])) or request_span.trace_id
        context: dict[str, Any] = {
            "traceId": public_id,
            "spanId": request_span.span_id,
            "source": label,
        }
        try:
            response = await _accept(
                state,
                request,
                configured,
                request_span=request_span,
                public_id=public_id,
                context=context,
            )
            outcome = "duplicate" if context["duplicate"] else "accepted"
        except IntakeError as refusal:
            outcome = refusal.code.lower()
            context.update(status=refusal.status, errorCode=refusal.code, reason=refusal.message)
            response = error_response(
                refusal.status,
                refusal.code,
                refusal.message,
                public_id,
                retry_after=refusal.retry_after,
            )
    duration = time.perf_counter() - started
    INTAKE_REQUESTS.labels(label, outcome).inc()
    INTAKE_LATENCY.labels(label).observe(duration)
    context["durationMs"] = round(duration * 1000, 3)
    log_line(log, "intake request", context)
    return response


async def _accept(
    state: IntakeState,
    request: Request,
    source: Source | None,
    *,
    request_span: SpanHandle,
    public_id: str,
    context: dict[str, Any],
) -> HTTPResponse:
    if source is None:
        raise IntakeError(404, "UNKNOWN_SOURCE", "no source with this name is configured")
    source_name = source.name
    _check_content_type(request.headers.getall("content-type", []))
    body = request.body
    adapter = source.adapter
    try:
        with span("verify signature", parent=request_span):
            key_id = adapter.verify(
                inbound(request, body, state.settings.trusted_proxy_header),
                source.secrets,
                now=time.time(),
                tolerance=source.tolerance_seconds,
            )
    except VerificationError as error:
        context["signatureFailure"] = error.reason
        SIGNATURE_FAILURES.labels(source_name, error.reason).inc()
        raise IntakeError(401, "INVALID_SIGNATURE", str(error)) from None
    key_id = key_id or "-"
    if not adapter.canonical:
        return await accept_mapped(
            state,
            request,
            source,
            key_id=key_id,
            request_span=request_span,
            public_id=public_id,
            context=context,
        )
    try:
        event = parse_event(body, source_name, default_source=DEFAULT_SOURCE)
    except EventError as error:
        raise IntakeError(400, "INVALID_PAYLOAD", str(error)) from None
    context.update(eventId=event.eventId, keyId=key_id)
    assert event.idempotencyKey is not None
    received_at = iso_utc(time.time())
    settings = state.settings
    limit = source.rate_limit
    try:
        with span("enqueue", parent=request_span, kind="producer") as enqueue_span:
            outcome = await state.writer.write(
                WriteRequest(
                    message=encode_event_message(
                        event=event.to_wire(),
                        received_at=received_at,
                        trace_id=public_id,
                        traceparent=enqueue_span.traceparent,
                        source=source_name,
                        shipment_namespace=source.shipment_namespace,
                        key_id=key_id,
                    ),
                    # The authenticated source scopes the hint: no other source can make this
                    # a duplicate.
                    tenant=source_name,
                    idempotency_key=event.idempotencyKey,
                    per_second=limit.per_second if limit else 0,
                    burst=limit.burst if limit else 0,
                    hint_ttl=settings.dedup_hint_ttl_seconds,
                )
            )
    except IntakeUnavailableError as error:
        raise IntakeError(
            503, "INTAKE_UNAVAILABLE", str(error), retry_after=settings.intake_retry_after_seconds
        ) from None
    if outcome.status == "limited":
        raise IntakeError(
            429,
            "RATE_LIMITED",
            f"source '{source_name}' is over its rate limit",
            retry_after=outcome.retry_after,
        )
    duplicate = outcome.status == "duplicate"
    if duplicate:
        DUPLICATES.labels("intake").inc()
    else:
        ENQUEUED.labels(source_name).inc()
        if source.scheme is Scheme.LEGACY_BODY:
            LEGACY_SIGNATURES.labels(source_name).inc()
    context.update(status=202, duplicate=duplicate)
    return json_response(
        {
            "acknowledged": True,
            "eventId": event.eventId,
            "idempotencyKey": event.idempotencyKey,
            "traceId": public_id,
            "queued": not duplicate,
            "duplicate": duplicate,
            "receivedAt": received_at,
        },
        202,
        headers={"x-request-id": public_id},
    )


_PROBE_METHODS = ["HEAD", "GET", "OPTIONS"]


async def probe_source(request: Request, source: str) -> HTTPResponse:
    """A provider's probe of its webhook URL (Ship24 sends HEAD before saving it).

    Answered as the source's adapter declares (its ``handshake``), without authentication: it
    tells nothing but that the URL exists. Any other method is 405 with the methods allowed.
    """
    state = _state(request)
    configured = state.keyring.get(source)
    trace_id = request_id(request.headers.getall("x-request-id", [])) or os.urandom(16).hex()
    if configured is None:
        return error_response(
            404, "UNKNOWN_SOURCE", "no source with this name is configured", trace_id
        )
    handshakes = configured.adapter.handshakes
    handshake = handshakes.get(request.method)
    if handshake is None:
        response = error_response(
            405, "METHOD_NOT_ALLOWED", "this endpoint does not accept that method", trace_id
        )
        response.headers["allow"] = ", ".join(["POST", *sorted(handshakes)])
        return response
    text = handshake.body or ""
    if handshake.echoQuery is not None:
        text = request.args.get(handshake.echoQuery, "") or ""
    log_line(
        log,
        "handshake",
        {
            "traceId": trace_id,
            "source": source,
            "method": request.method,
            "status": handshake.status,
        },
    )
    return raw(text.encode(), status=handshake.status, content_type="text/plain; charset=utf-8")


routes.add_route(probe_source, "/v1/events/<source:str>", methods=_PROBE_METHODS)


def _check_content_type(values: list[str]) -> None:
    if len(values) != 1:
        raise IntakeError(
            415, "UNSUPPORTED_MEDIA_TYPE", "send exactly one content-type: application/json"
        )
    mime, _, parameters = values[0].partition(";")
    if mime.strip().lower() != "application/json":
        raise IntakeError(415, "UNSUPPORTED_MEDIA_TYPE", "content-type must be application/json")
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in {
            "utf-8",
            "utf8",
        }:
            raise IntakeError(415, "UNSUPPORTED_MEDIA_TYPE", "the only accepted charset is utf-8")


def _health_document(state: IntakeState, status: str) -> dict[str, Any]:
    from courier_gateway import __version__

    return {
        "status": status,
        "draining": state.draining,
        "redis": state.health.redis,
        "store": state.health.store,
        "version": __version__,
    }


@routes.get("/health")
async def health(request: Request) -> HTTPResponse:
    """Liveness: answers while the process runs, reporting Redis and the store."""
    return json_response(_health_document(_state(request), "ok"), 200)


@routes.get("/ready")
async def ready(request: Request) -> HTTPResponse:
    """Readiness: 200 while Redis is reachable and the process is not draining, else 503."""
    state = _state(request)
    is_ready = state.health.redis == "connected" and not state.draining
    return json_response(
        _health_document(state, "ready" if is_ready else "not_ready"), 200 if is_ready else 503
    )


@routes.get("/metrics")
async def metrics(request: Request) -> HTTPResponse:
    """Prometheus metrics of every ingress process."""
    return raw(render(), content_type=CONTENT_TYPE_LATEST)


@routes.get("/openapi.json")
async def openapi_json(request: Request) -> HTTPResponse:
    """The OpenAPI 3 document of this API."""
    return json_response(_OPENAPI, 200)


@routes.get("/openapi.yaml")
async def openapi_yaml(request: Request) -> HTTPResponse:
    """The OpenAPI 3 document, as kept in the repository."""
    return raw(_OPENAPI_YAML, content_type="application/yaml")
