"""Signature schemes over real HTTP: what each one binds, and how each failure is named.

v1 and standard-webhooks sign the timestamp, so a body signed for one timestamp and sent with
another is refused. legacy-body cannot bind the timestamp (that is its weakness); it is accepted
only where a source opts in, and a re-sent capture is absorbed as a duplicate, never re-enqueued.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from courier_gateway.config.sources import Scheme
from tests.support.servers import GatewayProcess, RedisServer
from tests.support.signing import event, signed
from tests.support.sources import COURIER_SECRET, DHL_SECRET, LEGACY_SECRET

SCHEMES = [
    ("courier", COURIER_SECRET, Scheme.V1, "x-signature-timestamp"),
    ("dhl", DHL_SECRET, Scheme.STANDARD_WEBHOOKS, "webhook-timestamp"),
]


@pytest.fixture
def client(ingress: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ingress.url, timeout=10) as http:
        yield http


@pytest.fixture
def stream_length(ingress: GatewayProcess, redis_server: RedisServer) -> Iterator[object]:
    redis = redis_server.client()
    yield lambda: int(redis.xlen(ingress.stream))
    redis.close()


def refused(response: httpx.Response, mentions: str) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["errorCode"] == "INVALID_SIGNATURE"
    assert mentions in response.json()["message"], response.json()["message"]


@pytest.mark.parametrize(("source", "secret", "scheme", "timestamp_header"), SCHEMES)
def test_signature_is_bound_to_its_timestamp(
    client, stream_length, source, secret, scheme, timestamp_header
) -> None:
    now = int(time.time())
    body, headers = signed(event(source=source), secret, scheme=scheme, timestamp=now - 60)
    headers[timestamp_header] = str(now)  # fresh timestamp, signature made for the old one
    before = stream_length()
    refused(client.post(f"/v1/events/{source}", content=body, headers=headers), "does not match")
    assert stream_length() == before


@pytest.mark.parametrize(("source", "secret", "scheme", "timestamp_header"), SCHEMES)
@pytest.mark.parametrize(("offset", "mentions"), [(-301, "in the past"), (301, "in the future")])
def test_timestamp_outside_tolerance(
    client, source, secret, scheme, timestamp_header, offset, mentions
) -> None:
    body, headers = signed(
        event(source=source), secret, scheme=scheme, timestamp=int(time.time()) + offset
    )
    response = client.post(f"/v1/events/{source}", content=body, headers=headers)
    refused(response, mentions)
    assert timestamp_header in response.json()["message"]
    assert "tolerance is 300 s" in response.json()["message"]


@pytest.mark.parametrize(("source", "secret", "scheme", "timestamp_header"), SCHEMES)
def test_timestamp_inside_tolerance_both_ways(
    client, source, secret, scheme, timestamp_header
) -> None:
    for offset in (-290, 290):
        body, headers = signed(
            event(source=source), secret, scheme=scheme, timestamp=int(time.time()) + offset
        )
        assert client.post(f"/v1/events/{source}", content=body, headers=headers).status_code == 202


def test_body_tampering_is_refused_for_every_scheme(client) -> None:
    for source, secret, scheme in [
        ("courier", COURIER_SECRET, Scheme.V1),
        ("dhl", DHL_SECRET, Scheme.STANDARD_WEBHOOKS),
        ("legacy", LEGACY_SECRET, Scheme.LEGACY_BODY),
    ]:
        body, headers = signed(event(source=source), secret, scheme=scheme)
        tampered = body.replace(b"in_transit", b"delivered")
        refused(
            client.post(f"/v1/events/{source}", content=tampered, headers=headers), "does not match"
        )


def test_legacy_signature_is_refused_where_the_source_did_not_opt_in(client, stream_length) -> None:
    body, headers = signed(event(), COURIER_SECRET, scheme=Scheme.LEGACY_BODY)
    before = stream_length()
    refused(client.post("/v1/events/courier", content=body, headers=headers), "legacy-body")
    assert stream_length() == before


def test_replayed_legacy_capture_is_absorbed_as_a_duplicate(client, stream_length) -> None:
    body, headers = signed(event(source="legacy"), LEGACY_SECRET, scheme=Scheme.LEGACY_BODY)
    assert client.post("/v1/events/legacy", content=body, headers=headers).json()["queued"] is True
    before = stream_length()
    # The original's hole: the timestamp is not signed, so an attacker can refresh it...
    headers["x-signature-timestamp"] = str(int(time.time()) + 5)
    replay = client.post("/v1/events/legacy", content=body, headers=headers)
    # ...but the body is the same event, so nothing is enqueued again.
    assert replay.status_code == 202
    assert replay.json()["duplicate"] is True and replay.json()["queued"] is False
    assert stream_length() == before


def test_sha512_is_accepted(client) -> None:
    body, headers = signed(event(), COURIER_SECRET, algorithm="hmac-sha512")
    assert client.post("/v1/events/courier", content=body, headers=headers).status_code == 202


@pytest.mark.parametrize(
    ("change", "mentions"),
    [
        (lambda h: h.pop("x-signature"), "missing header x-signature"),
        (lambda h: h.pop("x-signature-timestamp"), "missing header x-signature-timestamp"),
        (lambda h: h.update({"x-signature-timestamp": "yesterday"}), "unix seconds"),
        (
            lambda h: h.update({"x-signature-algorithm": "md5"}),
            "x-signature-algorithm must be one of",
        ),
        (lambda h: h.update({"x-signature": "zz"}), "64 hex digits"),
        (lambda h: h.update({"x-signature": "0" * 64}), "does not match"),
    ],
)
def test_v1_failures_name_the_check(client, change, mentions) -> None:
    body, headers = signed(event(), COURIER_SECRET)
    change(headers)
    refused(client.post("/v1/events/courier", content=body, headers=headers), mentions)


def test_duplicate_signature_header_is_refused(client) -> None:
    body, headers = signed(event(), COURIER_SECRET)
    pairs = [*headers.items(), ("x-signature", headers["x-signature"])]
    refused(client.post("/v1/events/courier", content=body, headers=pairs), "more than once")


@pytest.mark.parametrize(
    ("change", "mentions"),
    [
        (lambda h: h.pop("webhook-id"), "missing header webhook-id"),
        (lambda h: h.update({"webhook-signature": "v2,abc"}), "no 'v1,<base64>'"),
        (lambda h: h.update({"webhook-id": "other-id"}), "does not match"),
    ],
)
def test_standard_webhooks_failures_name_the_check(client, change, mentions) -> None:
    body, headers = signed(event(source="dhl"), DHL_SECRET, scheme=Scheme.STANDARD_WEBHOOKS)
    change(headers)
    refused(client.post("/v1/events/dhl", content=body, headers=headers), mentions)


def test_standard_webhooks_accepts_any_listed_signature(client) -> None:
    body, headers = signed(event(source="dhl"), DHL_SECRET, scheme=Scheme.STANDARD_WEBHOOKS)
    headers["webhook-signature"] = "v1,aW52YWxpZA== " + headers["webhook-signature"]
    assert client.post("/v1/events/dhl", content=body, headers=headers).status_code == 202
