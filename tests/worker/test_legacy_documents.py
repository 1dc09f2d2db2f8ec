"""Documents written before tenancy keep working, and ``courier-gateway migrate`` moves the rest.

The store is filled exactly as version 0.1 wrote it (global ids, no ``tenant``, the old unique
dead-letter index), then a current ingress and worker run on it:

- the default source's documents are already in its namespace: a re-sent processed event is a
  duplicate and an older event joins its legacy shipment without changing it, with no migration;
- ``migrate`` moves another source's ledger entry, dead letter and shipment into its namespace,
  splitting a shipment both sources had written to, and is idempotent;
- afterwards that source's re-sent event is a duplicate, and its legacy dead letter replays.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml
from pymongo import MongoClient

from courier_gateway.worker.shipments import CLOSED, order_key
from tests.conftest import StartGateway
from tests.support.servers import RedisServer, StoreServer, wait_for
from tests.support.signing import signed
from tests.support.stack import StackEnv

SECRETS = {"courier": "courier-secret-0001", "beta": "beta-secret-0001"}
T0 = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)  # when the events happened
# When 0.1 wrote the documents: recent, or the TTL indexes would expire them.
WRITTEN = datetime.now(UTC).replace(microsecond=0)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def legacy_event(event_id: str, shipment_id: str, status: str, seconds: int, source: str) -> dict:
    return {
        "eventId": event_id,
        "eventType": "shipment.status.updated",
        "occurredAt": iso(at(seconds)),
        "source": source,
        "idempotencyKey": f"{source}:{event_id}",
        "payload": {"shipmentId": shipment_id, "status": status},
    }


def legacy_ledger(event: dict[str, Any]) -> dict[str, Any]:
    key = event["idempotencyKey"]
    return {
        "_id": key,
        "idempotencyKey": key,
        "eventId": event["eventId"],
        "source": event["source"],
        "shipmentId": event["payload"]["shipmentId"],
        "traceId": "0" * 32,
        "status": "processed",
        "leaseOwner": None,
        "leaseUntilMs": 0,
        "processedAt": WRITTEN,
        "attempts": [],
        "createdAt": WRITTEN,
    }


def legacy_entry(event: dict[str, Any], seconds: int) -> tuple[str, dict[str, Any]]:
    key = event["idempotencyKey"]
    return hashlib.sha256(key.encode()).hexdigest()[:24], {
        "idempotencyKey": key,
        "eventId": event["eventId"],
        "eventType": event["eventType"],
        "status": event["payload"]["status"],
        "occurredAt": at(seconds),
        "source": event["source"],
        "receivedAt": iso(at(seconds)),
    }


def legacy_shipment(shipment_id: str, *entries: tuple[dict[str, Any], int]) -> dict[str, Any]:
    history = dict(legacy_entry(event, seconds) for event, seconds in entries)
    latest, seconds = max(entries, key=lambda pair: pair[1])
    status = latest["payload"]["status"]
    order = order_key(at(seconds), latest["eventId"])
    return {
        "_id": shipment_id,
        "shipmentId": shipment_id,
        "status": status,
        "lastEventId": latest["eventId"],
        "lastOccurredAt": at(seconds),
        "lastEventOrder": order,
        "openEventOrder": CLOSED if status == "delivered" else order,
        "history": history,
        "createdAt": WRITTEN,
    }


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "courier_gateway", *args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_documents_from_before_tenancy_keep_working_and_migrate_moves_the_rest(
    start: StartGateway, redis_server: RedisServer, store_server: StoreServer, tmp_path: Path
) -> None:
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        yaml.safe_dump(
            {
                "sources": {
                    name: {"secrets": [{"id": f"{name}-1", "value": secret}]}
                    for name, secret in SECRETS.items()
                }
            }
        )
    )
    stack = StackEnv.create(redis_server, store_server, SOURCES_FILE=str(sources))
    del stack.env["SIGNING_SECRET"]

    # What version 0.1 left in the store.
    courier_done = legacy_event("evt_c1", "shp_c", "in_transit", 100, "courier")
    beta_done = legacy_event("evt_b1", "shp_mixed", "delivered", 300, "beta")
    courier_mixed = legacy_event("evt_c2", "shp_mixed", "in_transit", 100, "ups")
    beta_failed = legacy_event("evt_b2", "shp_dl", "picked_up", 50, "beta")
    with MongoClient(store_server.uri, tz_aware=True) as client:
        database = client[stack.env["MONGO_DB"]]
        database["processed_events"].insert_many(
            [legacy_ledger(e) for e in (courier_done, beta_done, courier_mixed)]
            + [{**legacy_ledger(beta_failed), "status": "dead_lettered"}]
        )
        database["active_shipments"].insert_many(
            [
                legacy_shipment("shp_c", (courier_done, 100)),
                legacy_shipment("shp_mixed", (beta_done, 300), (courier_mixed, 100)),
            ]
        )
        database["dead_letter_events"].create_index("idempotencyKey", unique=True)
        database["dead_letter_events"].insert_one(
            {
                "idempotencyKey": beta_failed["idempotencyKey"],
                "eventId": beta_failed["eventId"],
                "source": "beta",
                "reasonCode": "RETRIES_EXHAUSTED",
                "reasonMessage": "5 attempts failed",
                "attempts": [],
                "event": beta_failed,
                "traceId": "1" * 32,
                "receivedAt": iso(at(50)),
                "keyId": "beta-1",
                "reviewStatus": "pending",
                "deadLetteredAt": WRITTEN,
                "deadLetterCount": 1,
                "replays": [],
            }
        )

    start("ingress", stack.env)
    worker = start("worker", stack.env, wait_ready=False)
    http = httpx.Client(timeout=10)

    def post(source: str, document: dict[str, Any]) -> None:
        body, headers = signed(document, SECRETS[source])
        response = http.post(f"{stack.url}/v1/events/{source}", content=body, headers=headers)
        assert response.status_code == 202, response.text

    def attempt_outcome(event_id: str) -> str | None:
        for line in worker.logs().splitlines():
            if '"job attempt"' in line and f'"eventId":"{event_id}"' in line:
                return str(json.loads(line)["outcome"])
        return None

    # 1. The default source's legacy documents work as they are.
    post("courier", courier_done)
    assert wait_for(lambda: attempt_outcome("evt_c1") == "duplicate", timeout=30)
    older = legacy_event("evt_c0", "shp_c", "picked_up", 50, "courier")
    post("courier", older)
    assert stack.wait_terminal(5, timeout=30)  # 4 legacy records + this one
    [shipment] = stack.find("active_shipments", {"_id": "shp_c"})
    assert shipment["status"] == "in_transit" and len(shipment["history"]) == 2

    # 2. migrate moves beta's documents (and is idempotent).
    first = cli(stack.env, "migrate", "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["ledger"]["moved"] == 2  # evt_b1, evt_b2
    assert summary["deadLetters"]["adopted"] == 1
    assert summary["shipments"]["split"] == 1 and summary["shipments"]["movedTo"] == {"beta": 1}
    again = cli(stack.env, "migrate", "--json")
    assert again.returncode == 0, again.stderr
    repeat = json.loads(again.stdout)
    assert repeat["ledger"] == {"adopted": 0, "moved": 0, "inFlightLeftForLater": 0}
    assert repeat["shipments"]["split"] == repeat["shipments"]["adopted"] == 0

    [beta_shipment] = stack.find("active_shipments", {"_id": "beta shp_mixed"})
    assert (beta_shipment["status"], beta_shipment["namespace"]) == ("delivered", "beta")
    assert [e["eventId"] for e in beta_shipment["history"].values()] == ["evt_b1"]
    [courier_shipment] = stack.find("active_shipments", {"_id": "shp_mixed"})
    assert (courier_shipment["status"], courier_shipment["namespace"]) == ("in_transit", "courier")
    assert [e["eventId"] for e in courier_shipment["history"].values()] == ["evt_c2"]
    assert {r["tenant"] for r in stack.find("processed_events")} == {"courier", "beta"}

    # 3. After the migration beta's re-sent event is a duplicate, and its dead letter replays.
    post("beta", beta_done)
    assert wait_for(lambda: attempt_outcome("evt_b1") == "duplicate", timeout=30)
    replay = cli(stack.env, "replay", "--source", "beta", "--request-id", "after-upgrade")
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert wait_for(
        lambda: (
            stack.count("processed_events", {"_id": "beta beta:evt_b2", "status": "processed"}) == 1
        ),
        timeout=30,
    )
    [replayed] = stack.find("active_shipments", {"_id": "beta shp_dl"})
    assert replayed["status"] == "picked_up"
    [letter] = stack.find("dead_letter_events")
    assert (letter["tenant"], letter["reviewStatus"]) == ("beta", "replayed")
    http.close()
