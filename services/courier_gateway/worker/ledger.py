"""The idempotency ledger (``processed_events``): an atomic claim with a lease per key.

Lease expiry is stored as epoch milliseconds: an integer compares the same way on every
MongoDB-compatible store (the embedded test store turns ``$set`` datetimes into strings).

A claim succeeds for a new key (insert under the unique index) or for a key whose previous
holder's lease has expired (a crashed worker) or was released after a failed attempt. A key that
is processed is a duplicate. A key held under a live lease by someone else is *busy*: the caller
defers the message until the lease expires instead of dropping it, because the holder may be
dead and this copy may be the one that finishes the event. A replayed event may re-open a
dead-lettered key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from courier_gateway.store import ProcessedEvent
from courier_gateway.worker.batching import Finish, FinishBatcher, InsertBatcher

__all__ = ["Busy", "Claimed", "Duplicate", "Ledger"]


@dataclass(frozen=True, slots=True)
class Claimed:
    """This worker holds the key; ``applied`` says the store step already ran in an earlier try."""

    token: str
    applied: bool


@dataclass(frozen=True, slots=True)
class Duplicate:
    """The key already reached a terminal state (``processed`` or ``dead_lettered``)."""

    status: str


@dataclass(frozen=True, slots=True)
class Busy:
    """Another live holder has the key until ``until``."""

    until: datetime


def now() -> datetime:
    """The current UTC time, rounded to the millisecond MongoDB stores."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class Ledger:
    """Claims, releases and terminal marks on ``processed_events``."""

    def __init__(self, *, lease_seconds: float) -> None:
        self._lease_ms = int(lease_seconds * 1000)
        # Claims of concurrent jobs share one insert round trip (see batching.py).
        self._claims = InsertBatcher(lambda: self.collection)
        self._finishes = FinishBatcher(lambda: self.collection)

    @property
    def collection(self) -> AsyncCollection[dict[str, Any]]:
        """The pymongo collection behind the Beanie document."""
        collection: AsyncCollection[dict[str, Any]] = ProcessedEvent.get_pymongo_collection()
        return collection

    async def claim(
        self,
        *,
        key: str,
        token: str,
        tenant: str,
        event: dict[str, Any],
        trace_id: str,
        reopen_dead_letter: bool,
    ) -> Claimed | Duplicate | Busy:
        """Take the key for this attempt (a new key: one insert, shared with concurrent claims).

        ``key`` is the ledger id (the idempotency key scoped by ``tenant``, see
        :func:`courier_gateway.queue.messages.ledger_id`).
        """
        moment = now()
        now_ms = int(time.time() * 1000)
        lease_until = now_ms + self._lease_ms
        try:
            await self._claims.insert(
                {
                    # The key is the _id (primary key): unique by construction, and every later
                    # call finds the record without a secondary index.
                    "_id": key,
                    "idempotencyKey": event["idempotencyKey"],
                    "tenant": tenant,
                    "eventId": event["eventId"],
                    "source": event["source"],
                    "shipmentId": event["payload"]["shipmentId"],
                    "traceId": trace_id,
                    "status": "processing",
                    "leaseOwner": token,
                    "leaseUntilMs": lease_until,
                    "appliedAt": None,
                    "processedAt": None,
                    "attempts": [],
                    "createdAt": moment,
                }
            )
        except DuplicateKeyError:
            pass
        else:
            return Claimed(token, applied=False)
        takeable: list[dict[str, Any]] = [
            {"status": "processing", "leaseUntilMs": {"$lt": now_ms}},
        ]
        if reopen_dead_letter:
            takeable.append({"status": "dead_lettered"})
        document = await self.collection.find_one_and_update(
            # $and, not a sibling $or: the embedded test store ignores fields beside a $or.
            {"$and": [{"_id": key}, {"$or": takeable}]},
            {
                "$set": {
                    "status": "processing",
                    "tenant": tenant,  # records written before tenancy gain it here
                    "leaseOwner": token,
                    "leaseUntilMs": lease_until,
                    "traceId": trace_id,
                }
            },
            return_document=ReturnDocument.AFTER,
        )
        if document is not None:
            return Claimed(token, applied=document.get("appliedAt") is not None)
        existing = await self.collection.find_one({"_id": key})
        if existing is None:  # expired by TTL between our two calls: start over as new
            return await self.claim(
                key=key,
                token=token,
                tenant=tenant,
                event=event,
                trace_id=trace_id,
                reopen_dead_letter=False,
            )
        if existing["status"] == "processing":
            until_ms = max(int(existing.get("leaseUntilMs") or 0), now_ms)
            return Busy(datetime.fromtimestamp(until_ms / 1000, UTC))
        return Duplicate(existing["status"])

    async def release(self, *, key: str, token: str, attempts: list[dict[str, Any]]) -> None:
        """Give the key up after a failed attempt, recording the attempts so far."""
        await self.collection.update_one(
            {"_id": key, "leaseOwner": token},
            {"$set": {"leaseOwner": None, "leaseUntilMs": 0, "attempts": attempts}},
        )

    async def finish(
        self, *, key: str, token: str | None, status: str, attempts: list[dict[str, Any]]
    ) -> bool:
        """Mark the key ``processed`` or ``dead_lettered``; False if the lease was lost."""
        update: dict[str, Any] = {
            "status": status,
            "leaseOwner": None,
            "leaseUntilMs": 0,
            "finishedBy": token,
            "attempts": attempts,
        }
        if status == "processed":
            update["processedAt"] = now()
        # Shared with the marks of concurrent jobs: one bulk write (see batching.py).
        return await self._finishes.submit(Finish(key, token, update))
