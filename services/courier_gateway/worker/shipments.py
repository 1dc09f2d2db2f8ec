"""The business effect: a shipment's current status and its history (``active_shipments``).

Out-of-order events never regress state: the current status comes from the event with the
greatest ``(occurredAt, eventId)``; every applied event joins the history, older ones included.
Re-applying an event changes nothing (its idempotency key is already in the history). Writes are
guarded by the document's ``version`` (optimistic concurrency), so two workers applying two
events of one shipment never lose either: the loser re-reads and tries again.

Which statuses and transitions are valid is deliberately small and explicit: once a shipment is
final (delivered, returned, cancelled), a *newer* non-final status is an invalid transition and
the event is dead-lettered for review rather than silently applied.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from courier_gateway.store import ActiveShipment
from courier_gateway.worker.errors import TerminalError, TransientError
from courier_gateway.worker.ledger import now

__all__ = ["EVENT_TYPES", "FINAL_STATUSES", "STATUSES", "Shipments", "check_event"]

EVENT_TYPES = frozenset({"shipment.status.updated", "shipment.created"})
FINAL_STATUSES = frozenset({"delivered", "returned", "cancelled"})
STATUSES = FINAL_STATUSES | {
    "created",
    "label_created",
    "picked_up",
    "in_transit",
    "at_hub",
    "customs_hold",
    "out_for_delivery",
    "delivery_failed",
    "exception",
    "on_hold",
    "returning",
}
_OPTIMISTIC_TRIES = 8

Applied = Literal["applied", "older", "already"]


def check_event(event: dict[str, Any]) -> None:
    """Raise :class:`TerminalError` for an event the worker cannot apply whatever the state."""
    if event["eventType"] not in EVENT_TYPES:
        raise TerminalError(
            "UNKNOWN_EVENT_TYPE", f"event type {event['eventType']!r} is not handled"
        )
    status = event["payload"]["status"]
    if status not in STATUSES:
        raise TerminalError("UNKNOWN_STATUS", f"status {status!r} is not a known shipment status")


def order_key(occurred_at: datetime, event_id: str) -> str:
    """A string that sorts events by ``(occurredAt, eventId)``: fixed-width UTC time first."""
    return occurred_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") + "|" + event_id


def parse_time(text: str) -> datetime:
    """RFC 3339 text (as validated at intake) to an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class Shipments:
    """Applies events to ``active_shipments``."""

    @property
    def collection(self) -> AsyncCollection[dict[str, Any]]:
        """The pymongo collection behind the Beanie document."""
        collection: AsyncCollection[dict[str, Any]] = ActiveShipment.get_pymongo_collection()
        return collection

    async def apply(self, envelope: dict[str, Any]) -> Applied:
        """Apply one event; idempotent. Raise :class:`TerminalError` on an invalid transition."""
        event = envelope["event"]
        payload = event["payload"]
        occurred_at = parse_time(event["occurredAt"])
        order = order_key(occurred_at, event["eventId"])
        entry = {
            "idempotencyKey": event["idempotencyKey"],
            "eventId": event["eventId"],
            "eventType": event["eventType"],
            "status": payload["status"],
            "occurredAt": occurred_at,
            "source": event["source"],
            "receivedAt": envelope["receivedAt"],
        }
        current = {
            "status": payload["status"],
            "lastEventId": event["eventId"],
            "lastOccurredAt": occurred_at,
            "lastEventOrder": order,
        }
        if payload.get("orderId"):
            current["orderId"] = payload["orderId"]
        for _ in range(_OPTIMISTIC_TRIES):
            document = await self.collection.find_one({"shipmentId": payload["shipmentId"]})
            if document is None:
                moment = now()
                try:
                    await self.collection.insert_one(
                        {
                            "shipmentId": payload["shipmentId"],
                            "orderId": payload.get("orderId"),
                            **current,
                            "version": 1,
                            "history": [entry],
                            "createdAt": moment,
                            "updatedAt": moment,
                        }
                    )
                except DuplicateKeyError:
                    continue
                return "applied"
            history: list[dict[str, Any]] = document.get("history", [])
            if any(item["idempotencyKey"] == entry["idempotencyKey"] for item in history):
                return "already"
            newer = order > document["lastEventOrder"]
            if (
                newer
                and document["status"] in FINAL_STATUSES
                and payload["status"] not in FINAL_STATUSES
            ):
                raise TerminalError(
                    "INVALID_TRANSITION",
                    f"shipment is {document['status']!r};"
                    f" a later {payload['status']!r} is not allowed",
                )
            history = sorted([*history, entry], key=lambda item: _aware(item["occurredAt"]))
            changes: dict[str, Any] = {
                "history": history,
                "version": document["version"] + 1,
                "updatedAt": now(),
            }
            if newer:
                changes.update(current)
            result = await self.collection.update_one(
                {"shipmentId": payload["shipmentId"], "version": document["version"]},
                {"$set": changes},
            )
            if result.matched_count == 1:
                return "applied" if newer else "older"
        raise TransientError(
            "CONCURRENT_UPDATE", "the shipment kept changing under concurrent updates"
        )


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
