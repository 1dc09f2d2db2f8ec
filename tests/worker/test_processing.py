"""Exactly-once effect through real processes: ingress, worker, Redis, the store, a downstream.

Every accepted event reaches exactly one terminal state; one ledger record per idempotency key;
each shipment's history holds each event once; out-of-order events never regress the status.
"""

from __future__ import annotations

import random
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.conftest import StartGateway
from tests.support.downstream import Downstream
from tests.support.servers import RedisServer, StoreServer, wait_for
from tests.support.signing import event, signed
from tests.support.stack import SECRET, StackEnv, history, post_events


def at(seconds: int) -> str:
    moment = datetime(2026, 11, 1, 12, 0, tzinfo=UTC) + timedelta(seconds=seconds)
    return moment.isoformat().replace("+00:00", "Z")


def test_events_accepted_before_any_worker_ran_are_processed(
    start: StartGateway, redis_server: RedisServer, store_server: StoreServer
) -> None:
    stack = StackEnv.create(redis_server, store_server)
    start("ingress", stack.env)
    responses = post_events(stack.url, [event() for _ in range(20)])
    assert [r.status_code for r in responses] == [202] * 20
    start("worker", stack.env, wait_ready=False)
    assert stack.wait_terminal(20, timeout=30)
    assert stack.count("processed_events", {"status": "processed"}) == 20
    assert stack.count("active_shipments") == 20


def test_out_of_order_events_never_regress_the_status(
    start: StartGateway, redis_server: RedisServer, store_server: StoreServer
) -> None:
    stack = StackEnv.create(redis_server, store_server)
    start("ingress", stack.env)
    start("worker", stack.env, wait_ready=False)
    shipment = {"shipmentId": "shp_ooo", "orderId": "ord_1"}
    delivered = event(occurredAt=at(100), payload={**shipment, "status": "delivered"})
    out_for_delivery = event(occurredAt=at(50), payload={**shipment, "status": "out_for_delivery"})
    post_events(stack.url, [delivered])
    assert stack.wait_terminal(1, timeout=20)
    post_events(stack.url, [out_for_delivery])
    assert stack.wait_terminal(2, timeout=20)
    [document] = stack.find("active_shipments", {"shipmentId": "shp_ooo"})
    assert document["status"] == "delivered"
    assert document["lastEventId"] == delivered["eventId"]
    assert [entry["status"] for entry in history(document)] == ["out_for_delivery", "delivered"]
    assert stack.count("dead_letter_events") == 0


def test_a_later_non_final_status_after_delivery_is_dead_lettered(
    start: StartGateway, redis_server: RedisServer, store_server: StoreServer
) -> None:
    stack = StackEnv.create(redis_server, store_server)
    start("ingress", stack.env)
    start("worker", stack.env, wait_ready=False)
    shipment = {"shipmentId": "shp_final"}
    post_events(stack.url, [event(occurredAt=at(10), payload={**shipment, "status": "delivered"})])
    assert stack.wait_terminal(1, timeout=20)
    late = event(occurredAt=at(20), payload={**shipment, "status": "in_transit"})
    unknown = event(eventType="shipment.teleported")
    post_events(stack.url, [late, unknown])
    assert stack.wait_terminal(3, timeout=20)
    letters = {d["eventId"]: d for d in stack.find("dead_letter_events")}
    assert letters[late["eventId"]]["reasonCode"] == "INVALID_TRANSITION"
    assert letters[unknown["eventId"]]["reasonCode"] == "UNKNOWN_EVENT_TYPE"
    assert all(len(d["attempts"]) == 1 and d["reviewStatus"] == "pending" for d in letters.values())
    [document] = stack.find("active_shipments", {"shipmentId": "shp_final"})
    assert document["status"] == "delivered" and len(document["history"]) == 1


def test_five_hundred_events_with_duplicates_reach_exactly_one_terminal_state(
    start: StartGateway, redis_server: RedisServer, store_server: StoreServer
) -> None:
    downstream = Downstream().start()
    try:
        stack = StackEnv.create(
            redis_server,
            store_server,
            **downstream.env(),
            WORKER_CONCURRENCY="20",
        )
        start("ingress", stack.env)
        start("worker", stack.env, wait_ready=False)
        rng = random.Random(7)
        shipments = [f"shp_{index:03d}" for index in range(60)]
        originals = [
            event(
                occurredAt=at(index),
                payload={
                    "shipmentId": rng.choice(shipments),
                    "status": rng.choice(["in_transit", "at_hub", "picked_up"]),
                },
            )
            for index in range(450)
        ]
        duplicates = rng.sample(originals, 50)  # 10 % of the 500 requests
        traffic = originals + duplicates
        rng.shuffle(traffic)
        with httpx.Client(timeout=10) as client, ThreadPoolExecutor(8) as pool:
            chunks = [traffic[i::8] for i in range(8)]
            responses = [
                r
                for part in pool.map(lambda c: post_events(stack.url, c, client), chunks)
                for r in part
            ]
            # 20 concurrent copies of one event.
            hot = event(payload={"shipmentId": "shp_hot", "status": "in_transit"})
            body, headers = signed(hot, SECRET)
            copies = list(
                pool.map(
                    lambda _: client.post(
                        f"{stack.url}/v1/events/courier", content=body, headers=headers
                    ),
                    range(20),
                )
            )
        assert all(r.status_code == 202 for r in responses + copies)
        assert sum(not r.json()["duplicate"] for r in copies) == 1
        unique = len(originals) + 1
        assert stack.wait_terminal(unique, timeout=120)
        time.sleep(1)  # anything still in flight would show up as an extra record or delivery
        assert stack.count("processed_events") == unique
        assert stack.count("processed_events", {"status": "processed"}) == unique
        histories = [entry for doc in stack.find("active_shipments") for entry in history(doc)]
        keys = [entry["idempotencyKey"] for entry in histories]
        assert len(keys) == len(set(keys)) == unique
        seen = downstream.keys()
        assert set(seen) == {f"courier:{e['eventId']}" for e in [*originals, hot]}
        for request in downstream.requests:
            assert request.headers["idempotency-key"] == f"courier:{request.body['eventId']}"
            assert request.headers["traceparent"].startswith("00-")
            assert request.headers["x-signature"]
        assert wait_for(lambda: stack.count("dead_letter_events") == 0, timeout=1)
    finally:
        downstream.stop()


@pytest.mark.parametrize("copies", [5])
def test_concurrent_duplicates_inside_one_worker_apply_once(
    start: StartGateway, redis_server: RedisServer, store_server: StoreServer, copies: int
) -> None:
    stack = StackEnv.create(redis_server, store_server, DEDUP_HINT_TTL_SECONDS="0")
    start("ingress", stack.env)
    document = event()
    post_events(stack.url, [document] * copies)  # no intake hint: all copies are enqueued
    start("worker", stack.env, wait_ready=False)
    assert stack.wait_terminal(1, timeout=20)
    time.sleep(1.5)
    [record] = stack.find("processed_events")
    assert record["status"] == "processed" and len(record["attempts"]) == 1
    [shipment] = stack.find("active_shipments")
    assert len(shipment["history"]) == 1
