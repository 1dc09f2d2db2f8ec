"""Dead letters (``dead_letter_events``): one record per idempotency key, kept for review.

A record holds the reason, every attempt (across replays), the whole original event with its
``traceId``, ``reviewStatus`` and the replay history. If a replayed event fails again, the same
record is re-opened (``pending`` again, ``deadLetterCount`` + 1), so there is never more than one
pending dead letter per key and its history stays in one place.
"""

from __future__ import annotations

from typing import Any

from bson import ObjectId
from bson.errors import InvalidId
from pymongo.asynchronous.collection import AsyncCollection

from courier_gateway.queue.messages import shipment_namespace_of, tenant_of
from courier_gateway.store import AttemptRecord, DeadLetterEvent
from courier_gateway.worker.ledger import now

__all__ = ["DeadLetters"]


class DeadLetters:
    """Writes dead letters."""

    @property
    def collection(self) -> AsyncCollection[dict[str, Any]]:
        """The pymongo collection behind the Beanie document."""
        collection: AsyncCollection[dict[str, Any]] = DeadLetterEvent.get_pymongo_collection()
        return collection

    async def record(
        self,
        envelope: dict[str, Any],
        *,
        reason_code: str,
        reason_message: str,
        attempts: list[dict[str, Any]],
    ) -> None:
        """Create or re-open the dead letter of this event (idempotent for the same attempts)."""
        event = envelope["event"]
        tenant = tenant_of(envelope)
        await self.collection.update_one(
            _record_filter(envelope, tenant),
            {
                "$set": {
                    "eventId": event["eventId"],
                    "idempotencyKey": event["idempotencyKey"],
                    "tenant": tenant,
                    "shipmentNamespace": shipment_namespace_of(envelope),
                    "source": event["source"],
                    "reasonCode": reason_code,
                    "reasonMessage": reason_message,
                    "attempts": [AttemptRecord.model_validate(a).model_dump() for a in attempts],
                    "event": event,
                    "traceId": envelope["traceId"],
                    "receivedAt": envelope["receivedAt"],
                    "keyId": envelope.get("keyId"),
                    "reviewStatus": "pending",
                    "deadLetteredAt": now(),
                },
                "$setOnInsert": {"replays": []},
                "$inc": {"deadLetterCount": 1},
            },
            upsert=True,
        )


def _record_filter(envelope: dict[str, Any], tenant: str) -> dict[str, Any]:
    """The dead letter to create or re-open: the replayed one, else the tenant's for this key.

    A replayed event names its dead letter, so a record written before tenancy (no ``tenant``
    field) is re-opened rather than duplicated, and gains the tenant.
    """
    replayed = (envelope.get("replay") or {}).get("deadLetterId")
    if replayed:
        try:
            return {"_id": ObjectId(replayed)}
        except (InvalidId, TypeError):
            pass
    return {"tenant": tenant, "idempotencyKey": envelope["event"]["idempotencyKey"]}
