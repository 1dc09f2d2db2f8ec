"""Every source is a tenant: nothing one source sends changes what happens to another's events.

One ingress and one worker serve four sources: ``alpha`` (the attacker in these tests, holding a
valid key of its own), ``beta`` (the victim), ``agg`` (an aggregator that shares ``beta``'s
shipments on purpose, through ``shipmentNamespace``) and the default ``courier``. Whatever
``eventId``, ``idempotencyKey``, ``shipmentId`` and body ``source`` alpha chooses, beta's event is
queued (not a duplicate), claimed and processed under beta's own ledger entry, and beta's shipment
holds beta's events only.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from courier_gateway.tenancy import scoped
from tests.support.servers import GatewayProcess, RedisServer, StoreServer, start_gateway, wait_for
from tests.support.signing import signed
from tests.support.stack import StackEnv, history

SECRETS = {
    "alpha": "alpha-secret-0001",
    "beta": "beta-secret-0001",
    "agg": "aggregator-secret-0001",
    "courier": "courier-secret-0001",
}
_BASE = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
_counter = itertools.count()


def at(seconds: int) -> str:
    return (_BASE + timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")


class Tenants:
    """The running stack and helpers to post as a source and read what it stored."""

    def __init__(self, stack: StackEnv, ingress: GatewayProcess) -> None:
        self.stack = stack
        self.ingress = ingress
        self.http = httpx.Client(timeout=10)

    def post(self, source: str, document: dict[str, Any]) -> httpx.Response:
        body, headers = signed(document, SECRETS[source])
        return self.http.post(f"{self.stack.url}/v1/events/{source}", content=body, headers=headers)

    def ledger(self, tenant: str, event_id: str) -> dict[str, Any] | None:
        found = self.stack.find("processed_events", {"tenant": tenant, "eventId": event_id})
        assert len(found) <= 1
        return found[0] if found else None

    def shipment(self, namespace: str, shipment_id: str) -> dict[str, Any] | None:
        found = self.stack.find("active_shipments", {"_id": scoped(namespace, shipment_id)})
        return found[0] if found else None

    def wait_processed(self, tenant: str, event_id: str) -> dict[str, Any]:
        def done() -> bool:
            record = self.ledger(tenant, event_id)
            return record is not None and record["status"] in {"processed", "dead_lettered"}

        assert wait_for(done, timeout=30, interval=0.1), f"{tenant}/{event_id} never finished"
        record = self.ledger(tenant, event_id)
        assert record is not None
        return record


@pytest.fixture(scope="module")
def tenants(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, store_server: StoreServer
) -> Iterator[Tenants]:
    directory: Path = tmp_path_factory.mktemp("tenants")
    sources = {
        name: {"secrets": [{"id": f"{name}-1", "value": secret}]}
        for name, secret in SECRETS.items()
    }
    sources["agg"]["shipmentNamespace"] = "beta"
    sources_file = directory / "sources.yaml"
    sources_file.write_text(yaml.safe_dump({"sources": sources}))
    stack = StackEnv.create(redis_server, store_server, SOURCES_FILE=str(sources_file))
    del stack.env["SIGNING_SECRET"]
    ingress = start_gateway("ingress", stack.env, log_path=directory / "ingress.log")
    worker = start_gateway("worker", stack.env, log_path=directory / "worker.log", wait_ready=False)
    client = Tenants(stack, ingress)
    try:
        yield client
    finally:
        client.http.close()
        worker.stop(timeout=10)
        ingress.stop(timeout=10)


def victim_event(suffix: str) -> dict[str, Any]:
    return {
        "eventId": f"evt_{suffix}",
        "eventType": "shipment.status.updated",
        "occurredAt": at(100),
        "payload": {"shipmentId": f"shp_{suffix}", "status": "in_transit"},
    }


def test_a_key_named_after_another_source_does_not_make_its_event_a_duplicate(
    tenants: Tenants,
) -> None:
    suffix = uuid.uuid4().hex[:10]
    victim = victim_event(suffix)
    attack = {
        **victim,
        "idempotencyKey": f"beta:evt_{suffix}",
        "payload": {"shipmentId": f"shp_{suffix}", "status": "delivered"},
    }
    assert tenants.post("alpha", attack).status_code == 202
    answer = tenants.post("beta", victim).json()
    assert (answer["duplicate"], answer["queued"]) == (False, True)
    assert answer["idempotencyKey"] == f"beta:evt_{suffix}"
    # Both hints exist, each under its own tenant.
    redis = tenants.stack.queue_client()
    layout = tenants.stack.layout
    for tenant in ("alpha", "beta"):
        key = f"beta:evt_{suffix}"
        assert redis.exists(layout.partition_for(tenant, key).hint_key(tenant, key))
    redis.close()

    record = tenants.wait_processed("beta", victim["eventId"])
    assert record["status"] == "processed"
    assert record["_id"] == scoped("beta", f"beta:evt_{suffix}")
    shipment = tenants.shipment("beta", f"shp_{suffix}")
    assert shipment is not None and shipment["status"] == "in_transit"
    assert {entry["tenant"] for entry in history(shipment)} == {"beta"}
    alpha = tenants.shipment("alpha", f"shp_{suffix}")
    assert alpha is not None and alpha["status"] == "delivered"


def test_a_newer_event_of_another_source_leaves_the_shipment_alone(tenants: Tenants) -> None:
    suffix = uuid.uuid4().hex[:10]
    victim = victim_event(suffix)
    assert tenants.post("beta", victim).status_code == 202
    tenants.wait_processed("beta", victim["eventId"])
    newer = {
        **victim,
        "eventId": f"evt_{suffix}_x",
        "occurredAt": at(200),
        "payload": {"shipmentId": f"shp_{suffix}", "status": "delivered"},
    }
    assert tenants.post("alpha", newer).status_code == 202
    tenants.wait_processed("alpha", newer["eventId"])
    shipment = tenants.shipment("beta", f"shp_{suffix}")
    assert shipment is not None
    assert (shipment["status"], shipment["lastEventId"]) == ("in_transit", victim["eventId"])
    assert len(shipment["history"]) == 1


def test_sources_share_shipments_only_when_the_sources_file_says_so(tenants: Tenants) -> None:
    suffix = uuid.uuid4().hex[:10]
    carrier = victim_event(suffix)
    assert tenants.post("beta", carrier).status_code == 202
    tenants.wait_processed("beta", carrier["eventId"])
    # The aggregator reports the same parcel, with the same event id, later.
    aggregator = {
        **carrier,
        "occurredAt": at(300),
        "payload": {"shipmentId": f"shp_{suffix}", "status": "delivered"},
    }
    answer = tenants.post("agg", aggregator).json()
    assert (answer["duplicate"], answer["queued"]) == (False, True)
    tenants.wait_processed("agg", carrier["eventId"])
    shipment = tenants.shipment("beta", f"shp_{suffix}")
    assert shipment is not None and shipment["status"] == "delivered"
    assert shipment["namespace"] == "beta"
    assert sorted(entry["tenant"] for entry in history(shipment)) == ["agg", "beta"]
    assert tenants.shipment("agg", f"shp_{suffix}") is None


def test_the_body_source_is_descriptive_only(tenants: Tenants) -> None:
    suffix = uuid.uuid4().hex[:10]
    # The default source carries any courier's events (as the original did)...
    document = {**victim_event(suffix), "source": "beta"}
    answer = tenants.post("courier", document).json()
    assert answer["idempotencyKey"] == f"beta:evt_{suffix}"
    record = tenants.wait_processed("courier", document["eventId"])
    assert (record["tenant"], record["source"]) == ("courier", "beta")
    assert record["_id"] == f"beta:evt_{suffix}"  # the default source keeps bare ids
    assert tenants.shipment("courier", f"shp_{suffix}") is not None
    assert tenants.shipment("beta", f"shp_{suffix}") is None
    # ...while another source's body cannot claim to be someone else.
    refused = tenants.post("alpha", {**victim_event(suffix), "source": "beta"})
    assert refused.status_code == 400


# Property: alpha picks any collision with beta's event; beta's outcome never changes.
_identifier = st.sampled_from(["same", "other"])


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    event_id=_identifier,
    key=st.sampled_from(["default", "victims-default", "victims-own", "arbitrary"]),
    shipment=_identifier,
    body_source=st.sampled_from([None, "alpha"]),
    status=st.sampled_from(["delivered", "picked_up", "exception"]),
    when=st.sampled_from([-50, 0, 50]),
    order=st.sampled_from(["before", "after", "both"]),
)
def test_no_collision_of_ids_lets_a_source_touch_another_sources_event(
    tenants: Tenants,
    event_id: str,
    key: str,
    shipment: str,
    body_source: str | None,
    status: str,
    when: int,
    order: str,
) -> None:
    suffix = f"p{next(_counter)}_{uuid.uuid4().hex[:8]}"
    victim = victim_event(suffix)
    victim["idempotencyKey"] = f"key_{suffix}"  # beta sends its own explicit key
    attack: dict[str, Any] = {
        "eventId": victim["eventId"] if event_id == "same" else f"evt_a_{suffix}",
        "eventType": "shipment.status.updated",
        "occurredAt": at(100 + when),
        "payload": {
            "shipmentId": victim["payload"]["shipmentId"] if shipment == "same" else f"s_{suffix}",
            "status": status,
        },
    }
    attack_key = {
        "default": None,
        "victims-default": f"beta:{victim['eventId']}",
        "victims-own": victim["idempotencyKey"],
        "arbitrary": f"x_{suffix}",
    }[key]
    if attack_key is not None:
        attack["idempotencyKey"] = attack_key
    if body_source is not None:
        attack["source"] = body_source

    if order in {"before", "both"}:
        assert tenants.post("alpha", attack).status_code == 202
    answer = tenants.post("beta", victim).json()
    assert (answer["duplicate"], answer["queued"]) == (False, True)
    if order in {"after", "both"}:
        later = {**attack, "occurredAt": at(500)} if order == "both" else attack
        assert tenants.post("alpha", later).status_code == 202
        tenants.wait_processed("alpha", later["eventId"])

    record = tenants.wait_processed("beta", victim["eventId"])
    assert record["status"] == "processed"
    assert record["tenant"] == "beta"
    assert len(record["attempts"]) == 1
    assert record["attempts"][0]["outcome"] == "processed"
    shipment_doc = tenants.shipment("beta", victim["payload"]["shipmentId"])
    assert shipment_doc is not None
    assert (shipment_doc["status"], shipment_doc["lastEventId"]) == (
        "in_transit",
        victim["eventId"],
    )
    assert [entry["tenant"] for entry in history(shipment_doc)] == ["beta"]
    assert tenants.stack.count("dead_letter_events", {"tenant": "beta"}) == 0
