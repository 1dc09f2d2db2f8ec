"""Concurrent ledger claims share insert round trips, and each caller gets its own outcome.

Against the real store: 30 concurrent inserts, one of them a second copy of a new key and five
of them keys that exist already, are written in a few ``insert`` commands; every new key is
inserted once, every other caller gets ``DuplicateKeyError``.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from pymongo import AsyncMongoClient, monitoring
from pymongo.errors import DuplicateKeyError

from courier_gateway.worker.batching import Finish, FinishBatcher, InsertBatcher
from tests.support.servers import StoreServer


class _Inserts(monitoring.CommandListener):
    def __init__(self) -> None:
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "insert":
            self.count += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_concurrent_inserts_share_round_trips_and_keep_their_own_outcomes(
    store_server: StoreServer,
) -> None:
    listener = _Inserts()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        store_server.uri, event_listeners=[listener]
    )
    collection = client[f"t_{uuid.uuid4().hex[:10]}"]["claims"]
    try:
        await collection.insert_many([{"_id": f"old-{i}"} for i in range(5)])
        before = listener.count
        batcher = InsertBatcher(lambda: collection)
        keys = [f"new-{i}" for i in range(24)] + ["new-0"] + [f"old-{i}" for i in range(5)]

        async def claim(key: str) -> str:
            try:
                await batcher.insert({"_id": key, "worker": uuid.uuid4().hex})
            except DuplicateKeyError:
                return "duplicate"
            return "inserted"

        outcomes = await asyncio.gather(*(claim(key) for key in keys))

        assert outcomes.count("inserted") == 24
        assert outcomes[25:] == ["duplicate"] * 5
        assert sorted(outcomes[:25]).count("duplicate") == 1  # one of the two copies of new-0
        assert await collection.count_documents({}) == 29
        assert listener.count - before <= 3  # 30 claims, a handful of round trips
    finally:
        await client.close()


async def test_a_store_failure_reaches_every_caller(store_server: StoreServer) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200"
    )
    batcher = InsertBatcher(lambda: client["t"]["claims"])
    try:
        results = await asyncio.gather(
            *(batcher.insert({"_id": i}) for i in range(3)), return_exceptions=True
        )
    finally:
        await client.close()
    assert len(results) == 3
    for result in results:
        assert isinstance(result, Exception) and not isinstance(result, DuplicateKeyError)


async def test_concurrent_terminal_marks_share_a_bulk_write_and_know_if_their_lease_held(
    store_server: StoreServer,
) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(store_server.uri)
    collection = client[f"t_{uuid.uuid4().hex[:10]}"]["ledger"]
    try:
        await collection.insert_many(
            [
                {"_id": "held-1", "leaseOwner": "t1", "status": "processing"},
                {"_id": "held-2", "leaseOwner": "t2", "status": "processing"},
                # Our lease expired and another worker holds the key now.
                {"_id": "taken", "leaseOwner": "someone-else", "status": "processing"},
            ]
        )
        batcher = FinishBatcher(lambda: collection)

        def mark(key: str, token: str) -> Finish:
            fields = {"status": "processed", "leaseOwner": None, "finishedBy": token}
            return Finish(key, token, fields)

        outcomes = await asyncio.gather(
            batcher.submit(mark("held-1", "t1")),
            batcher.submit(mark("taken", "t3")),
            batcher.submit(mark("held-2", "t2")),
            batcher.submit(mark("gone", "t4")),  # expired by the TTL meanwhile
        )
        assert outcomes == [True, False, True, False]
        taken = await collection.find_one({"_id": "taken"})
        assert taken is not None and taken["status"] == "processing"  # untouched

        # All held: one bulk write answers without reading anything back.
        await collection.insert_one({"_id": "held-3", "leaseOwner": "t5", "status": "processing"})
        assert await batcher.submit(mark("held-3", "t5")) is True
    finally:
        await client.close()
