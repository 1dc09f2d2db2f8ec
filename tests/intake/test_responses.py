"""Every status and error code of the intake API, over real HTTP against a real Redis stream.

For each 202 the event is read back from the stream; for each refusal the stream is unchanged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from taskiq.formatters.json_formatter import JSONFormatter

from courier_gateway.config.sources import Scheme
from courier_gateway.queue import PROCESS_EVENT_TASK
from tests.support.servers import GatewayProcess, RedisServer
from tests.support.signing import event, signed
from tests.support.sources import COURIER_SECRET, DHL_SECRET, LEGACY_SECRET, LIMITED_SECRET


@pytest.fixture
def client(ingress: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ingress.url, timeout=10) as http:
        yield http


@pytest.fixture
def stream(ingress: GatewayProcess, redis_server: RedisServer) -> Iterator[Any]:
    """Read the ingress's stream; ``stream.length()`` and ``stream.entries()``."""

    class Stream:
        def __init__(self) -> None:
            self.redis = redis_server.client()

        def length(self) -> int:
            return int(self.redis.xlen(ingress.stream))

        def entries(self) -> list[dict[str, Any]]:
            return [
                orjson.loads(fields[b"data"]) for _, fields in self.redis.xrange(ingress.stream)
            ]

    reader = Stream()
    yield reader
    reader.redis.close()


def post(client: httpx.Client, source: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return client.post(f"/v1/events/{source}", content=body, headers=headers)


def assert_refused(
    response: httpx.Response, status: int, code: str, mentions: str
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    document = response.json()
    assert document["acknowledged"] is False
    assert document["errorCode"] == code
    assert mentions in document["message"], document["message"]
    assert document["traceId"]
    return dict(document)


@pytest.mark.parametrize(
    ("source", "secret", "scheme"),
    [
        ("courier", COURIER_SECRET, Scheme.V1),
        ("dhl", DHL_SECRET, Scheme.STANDARD_WEBHOOKS),
        ("legacy", LEGACY_SECRET, Scheme.LEGACY_BODY),
    ],
)
def test_accepted_event_is_on_the_stream(client, stream, source, secret, scheme) -> None:
    document = event(source=source)
    body, headers = signed(document, secret, scheme=scheme)
    before = stream.length()
    response = post(client, source, body, headers | {"x-request-id": "req-123"})
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["acknowledged"] is True
    assert answer["queued"] is True and answer["duplicate"] is False
    assert answer["eventId"] == document["eventId"]
    assert answer["idempotencyKey"] == f"{source}:{document['eventId']}"
    assert answer["traceId"] == "req-123"
    assert response.headers["x-request-id"] == "req-123"
    assert answer["receivedAt"].endswith("Z")
    assert stream.length() == before + 1
    message = JSONFormatter().loads(json.dumps(stream.entries()[-1]).encode())
    assert message.task_name == PROCESS_EVENT_TASK
    assert message.labels["traceparent"].startswith("00-")
    envelope = message.kwargs["envelope"]
    assert envelope["event"]["eventId"] == document["eventId"]
    assert envelope["event"]["idempotencyKey"] == answer["idempotencyKey"]
    assert envelope["receivedAt"] == answer["receivedAt"]
    assert envelope["traceId"] == "req-123"
    assert envelope["source"] == source
    assert envelope["keyId"] in {"k1", "dhl-1", "old"}


def test_duplicate_is_acknowledged_but_not_enqueued_again(client, stream) -> None:
    body, headers = signed(event(), COURIER_SECRET)
    first = post(client, "courier", body, headers)
    length = stream.length()
    second = post(client, "courier", body, headers)
    assert first.status_code == second.status_code == 202
    assert second.json()["duplicate"] is True and second.json()["queued"] is False
    assert stream.length() == length


def test_extra_payload_fields_are_kept(client, stream) -> None:
    document = event()
    document["payload"]["carrierNotes"] = {"dock": 7, "tags": ["fragile"]}
    body, headers = signed(document, COURIER_SECRET)
    assert post(client, "courier", body, headers).status_code == 202
    kept = stream.entries()[-1]["kwargs"]["envelope"]["event"]["payload"]
    assert kept["carrierNotes"] == {"dock": 7, "tags": ["fragile"]}


def test_unknown_top_level_fields_are_accepted_and_dropped(client, stream) -> None:
    # A courier adding a field to its webhooks must not lose every event (the original
    # accepted them too); unknown fields inside payload are kept, at the top level dropped.
    document = event()
    document["carrierRegion"] = "EU-West"
    document["metadata"] = {"batch": 7, "ids": [1, 2]}
    body, headers = signed(document, COURIER_SECRET)
    assert post(client, "courier", body, headers).status_code == 202
    kept = stream.entries()[-1]["kwargs"]["envelope"]["event"]
    assert kept["eventId"] == document["eventId"]
    assert "carrierRegion" not in kept and "metadata" not in kept


def test_error_messages_never_echo_more_than_a_printable_excerpt(client, stream) -> None:
    hostile = "\x1b[31m" + "k" * 2000 + "\u202e.evil"
    document = event()
    document["payload"]["notes"] = {hostile: 1}
    body, headers = signed(document, COURIER_SECRET)
    before = stream.length()
    refused = assert_refused(post(client, "courier", body, headers), 400, "INVALID_PAYLOAD", "key")
    message = refused["message"]
    assert len(message) <= 300
    assert all(" " <= char <= "~" or char == "…" for char in message), message
    assert "k" * 40 not in message
    assert stream.length() == before


def test_traceparent_is_continued(client, stream) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    body, headers = signed(event(), COURIER_SECRET)
    headers["traceparent"] = f"00-{trace_id}-00f067aa0ba902b7-01"
    response = post(client, "courier", body, headers)
    assert response.json()["traceId"] == trace_id
    assert stream.entries()[-1]["labels"]["traceparent"].startswith(f"00-{trace_id}-")


@pytest.mark.parametrize(
    ("mutate", "mentions"),
    [
        (lambda d: d.pop("eventId"), "eventId: field required"),
        (lambda d: d.update(occurredAt="2026-01-01T00:00:00"), "occurredAt"),
        (lambda d: d.update(occurredAt=1767225600), "occurredAt"),
        (lambda d: d["payload"].pop("shipmentId"), "payload.shipmentId"),
        (lambda d: d["payload"].update(big=2**70), "64-bit"),
        (lambda d: d.update(source="ups"), None),
    ],
)
def test_invalid_payload(client, stream, mutate, mentions) -> None:
    document = event()
    mutate(document)
    body, headers = signed(document, COURIER_SECRET)
    before = stream.length()
    response = post(client, "courier" if mentions else "fedex", body, headers)
    if mentions is None:
        # fedex is its own source: a body claiming another source is refused.
        body, headers = signed(document, LIMITED_SECRET)
        response = post(client, "fedex", body, headers)
        mentions = "does not match the source of the URL"
    assert_refused(response, 400, "INVALID_PAYLOAD", mentions)
    assert stream.length() == before


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
        (b"\xff\xfe\x00", "not valid JSON"),
        (b"[]", "body must be a JSON object"),
        (b"[" * 1500 + b"]" * 1500, "not valid JSON"),
    ],
)
def test_malformed_json(client, stream, body, mentions) -> None:
    _, headers = signed(body, COURIER_SECRET)
    before = stream.length()
    assert_refused(post(client, "courier", body, headers), 400, "INVALID_PAYLOAD", mentions)
    assert stream.length() == before


def test_payload_too_large(client, stream) -> None:
    # The shared ingress runs with MAX_BODY_BYTES=4096.
    document = event()
    document["payload"]["padding"] = "x" * 5000
    body, headers = signed(document, COURIER_SECRET)
    before = stream.length()
    assert_refused(post(client, "courier", body, headers), 413, "PAYLOAD_TOO_LARGE", "4096")
    assert stream.length() == before


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "application/json; charset=latin-1"],
)
def test_unsupported_media_type(client, stream, content_type) -> None:
    body, headers = signed(event(), COURIER_SECRET)
    headers["content-type"] = content_type
    before = stream.length()
    assert_refused(
        post(client, "courier", body, headers),
        415,
        "UNSUPPORTED_MEDIA_TYPE",
        "content-type" if "charset" not in content_type else "utf-8",
    )
    assert stream.length() == before


def test_charset_utf8_is_accepted(client) -> None:
    body, headers = signed(event(), COURIER_SECRET)
    headers["content-type"] = "application/json; charset=utf-8"
    assert post(client, "courier", body, headers).status_code == 202


def test_unknown_source(client, stream) -> None:
    body, headers = signed(event(), COURIER_SECRET)
    before = stream.length()
    assert_refused(post(client, "nosuch", body, headers), 404, "UNKNOWN_SOURCE", "no source")
    assert stream.length() == before


def test_unknown_route_and_method(client) -> None:
    assert_refused(client.get("/v2/nothing"), 404, "NOT_FOUND", "no such endpoint")
    wrong_method = client.get("/v1/events/courier")
    assert_refused(wrong_method, 405, "METHOD_NOT_ALLOWED", "method")
    assert wrong_method.headers["allow"] == "POST"
    assert client.delete("/health").headers["allow"] == "GET"


def test_rate_limited_source_gets_429_and_others_are_unaffected(client, stream) -> None:
    statuses = []
    retry_after = []
    for _ in range(12):
        body, headers = signed(event(source="fedex"), LIMITED_SECRET)
        response = post(client, "fedex", body, headers)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert_refused(response, 429, "RATE_LIMITED", "rate limit")
            retry_after.append(int(response.headers["retry-after"]))
    assert statuses.count(202) >= 5
    assert statuses.count(429) >= 5
    assert all(1 <= seconds <= 2 for seconds in retry_after)
    body, headers = signed(event(), COURIER_SECRET)
    assert post(client, "courier", body, headers).status_code == 202
    time.sleep(1.1)  # the bucket refills at 5/s
    body, headers = signed(event(source="fedex"), LIMITED_SECRET)
    assert post(client, "fedex", body, headers).status_code == 202


def test_health_and_ready_report_dependencies(client) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["redis"] == "connected"
    assert health["store"] == "connected"
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


def test_openapi_document_is_served(client) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert "/v1/events/{source}" in document["paths"]
    assert client.get("/openapi.yaml").status_code == 200
