"""Indexes and TTLs of DESIGN §6 are created at start-up, and creating them again is harmless."""

from __future__ import annotations

import uuid
from typing import Any

from pymongo import MongoClient

from courier_gateway.config import Settings
from courier_gateway.store import open_store
from tests.support.servers import RedisServer, StoreServer


def indexes(uri: str, database: str, collection: str) -> dict[tuple[str, ...], dict[str, Any]]:
    with MongoClient(uri) as client:
        found = client[database][collection].index_information()
    return {tuple(field for field, _ in spec["key"]): spec for spec in found.values()}


async def test_indexes_and_ttls_are_created_idempotently(
    redis_server: RedisServer, store_server: StoreServer
) -> None:
    database = f"t_{uuid.uuid4().hex[:10]}"
    settings = Settings.from_env(
        {"MONGO_URI": store_server.uri, "MONGO_DB": database, "REDIS_URL": redis_server.url}
    )
    for _ in range(2):  # a second start must not fail on existing indexes
        client = await open_store(settings)
        await client.close()

    # The ledger and the shipments are keyed by _id (idempotency key, shipment id): their
    # uniqueness is the primary key's, no secondary unique index is needed.
    ledger = indexes(store_server.uri, database, "processed_events")
    assert ("idempotencyKey",) not in ledger
    assert not ledger[("tenant", "eventId")].get("unique")
    assert ledger[("createdAt",)]["expireAfterSeconds"] == 30 * 86400

    shipments = indexes(store_server.uri, database, "active_shipments")
    assert set(shipments) <= {("_id",)}

    letters = indexes(store_server.uri, database, "dead_letter_events")
    # One dead letter per tenant and key: two sources may use the same idempotency key.
    assert letters[("tenant", "idempotencyKey")]["unique"] is True
    assert ("idempotencyKey",) not in letters
    assert ("tenant", "eventId") in letters
    assert ("tenant", "eventId") in ledger
    assert ("reviewStatus", "reasonCode") in letters
    assert letters[("deadLetteredAt",)]["expireAfterSeconds"] == 90 * 86400


async def test_the_pre_tenancy_unique_key_index_is_dropped(
    redis_server: RedisServer, store_server: StoreServer
) -> None:
    database = f"t_{uuid.uuid4().hex[:10]}"
    with MongoClient(store_server.uri) as client:
        client[database]["dead_letter_events"].create_index("idempotencyKey", unique=True)
    settings = Settings.from_env(
        {"MONGO_URI": store_server.uri, "MONGO_DB": database, "REDIS_URL": redis_server.url}
    )
    client = await open_store(settings)
    await client.close()
    letters = indexes(store_server.uri, database, "dead_letter_events")
    assert ("idempotencyKey",) not in letters
    assert letters[("tenant", "idempotencyKey")]["unique"] is True
    with MongoClient(store_server.uri) as check:
        collection = check[database]["dead_letter_events"]
        collection.insert_one({"tenant": "alpha", "idempotencyKey": "k"})
        collection.insert_one({"tenant": "beta", "idempotencyKey": "k"})
