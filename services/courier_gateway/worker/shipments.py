"""The business effect: a shipment's current status and its history (``active_shipments``).

Out-of-order events never regress state: the current status comes from the event with the
greatest ``(occurredAt, eventId)``; every applied event joins the history, older ones included.

The common case, a newer event with an allowed transition, is one round trip: an upsert whose
filter holds the guard (``lastEventOrder`` below this event's, and not final when this status is
not: one range condition on ``openEventOrder``, see :meth:`Shipments.apply`) and whose update sets
both the current state and this event's history entry. The history is a map keyed by a digest of
the idempotency key, so an event appears once however often it is applied. When the guard fails on
an existing shipment, the upsert's insert collides with the shipment's ``_id`` (a standard MongoDB
duplicate-key error); a second write then adds the entry to the history if the event is older
than the shipment's latest (status unchanged), and only if it is not is the document read to
tell a re-applied event (nothing to do), a concurrent newer one (try again) and an invalid
transition (dead letter).

Which statuses and transitions are valid is deliberately small and explicit: once a shipment is
final (delivered, returned, cancelled), a *newer* non-final status is an invalid transition and
the event is dead-lettered for review rather than silently applied.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from courier_gateway.queue.messages import ledger_id, shipment_namespace_of, tenant_of
from courier_gateway.store import ActiveShipment
from courier_gateway.tenancy import scoped
from courier_gateway.worker.errors import TerminalError, TransientError
from courier_gateway.worker.ledger import now

__all__ = [
    "EVENT_TYPES",
    "FINAL_STATUSES",
    "STATUSES",
    "Shipments",
    "check_event",
    "history_key",
]

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
Applied = Literal["applied", "older", "already"]
_TRIES = 8


def check_event(event: dict[str, Any]) -> None:
    """Raise :class:`TerminalError` for an event the worker cannot apply whatever the state."""
    if event["eventType"] not in EVENT_TYPES:
        raise TerminalError(
            "UNKNOWN_EVENT_TYPE", f"event type {event['eventType']!r} is not handled"
        )
    status = event["payload"]["status"]
    if status not in STATUSES:
        raise TerminalError("UNKNOWN_STATUS", f"status {status!r} is not a known shipment status")


# Sorts after every order key (those start with digits): the openEventOrder of a final shipment.
CLOSED = "~"
_EPOCH = datetime(1, 1, 1, tzinfo=UTC)


def order_key(occurred_at: datetime, event_id: str) -> str:
    """A string that sorts events by ``(occurredAt, eventId)``.

    The time is microseconds since year 1, zero-padded to 18 digits: fixed width, so string order
    is time order. Not ISO text on purpose: the embedded test store compares date-like strings
    as dates in range queries, and this key is not a date.
    """
    micros = (occurred_at - _EPOCH) // timedelta(microseconds=1)
    return f"{micros:018d}|{event_id}"


def parse_time(text: str) -> datetime:
    """RFC 3339 text (as validated at intake) to an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def history_key(event_ledger_id: str) -> str:
    """The history map's key for an event: a digest of its ledger id (ids may hold '.' or '$').

    The ledger id is scoped by the tenant, so two sources sharing a shipment namespace never
    mistake each other's events for their own.
    """
    return hashlib.sha256(event_ledger_id.encode()).hexdigest()[:24]


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
        namespace = shipment_namespace_of(envelope)
        # The document id is the shipment id scoped by the source's shipment namespace.
        shipment_id = scoped(namespace, payload["shipmentId"])
        occurred_at = parse_time(event["occurredAt"])
        order = order_key(occurred_at, event["eventId"])
        status = payload["status"]
        entry_key = history_key(ledger_id(envelope))
        entry = {
            "idempotencyKey": event["idempotencyKey"],
            "eventId": event["eventId"],
            "eventType": event["eventType"],
            "status": status,
            "occurredAt": occurred_at,
            "source": event["source"],
            "tenant": tenant_of(envelope),
            "receivedAt": envelope["receivedAt"],
        }
        current: dict[str, Any] = {
            "status": status,
            "lastEventId": event["eventId"],
            "lastOccurredAt": occurred_at,
            "lastEventOrder": order,
            "openEventOrder": CLOSED if status in FINAL_STATUSES else order,
            f"history.{entry_key}": entry,
        }
        if payload.get("orderId"):
            current["orderId"] = payload["orderId"]
        # The shipment id is the document's _id: the primary key, the cheapest lookup anywhere.
        # One range condition guards both rules: a final shipment's openEventOrder is CLOSED,
        # above every order, so a newer non-final event does not match it. (Two conditions
        # beside _id make the embedded test store scan the collection.)
        if status in FINAL_STATUSES:
            guard: dict[str, Any] = {"_id": shipment_id, "lastEventOrder": {"$lt": order}}
        else:
            guard = {"_id": shipment_id, "openEventOrder": {"$lt": order}}
        for _ in range(_TRIES):
            moment = now()
            try:
                await self.collection.update_one(
                    guard,
                    {
                        "$set": {**current, "updatedAt": moment},
                        "$setOnInsert": {
                            "shipmentId": payload["shipmentId"],
                            "namespace": namespace,
                            "createdAt": moment,
                        },
                    },
                    upsert=True,
                )
            except DuplicateKeyError:
                # The shipment exists and the guard did not hold. Most often the event is older
                # than the shipment's latest and only joins the history: one write says so.
                joined = await self.collection.update_one(
                    {"_id": shipment_id, "lastEventOrder": {"$gt": order}},
                    {"$set": {f"history.{entry_key}": entry}},
                )
                if joined.matched_count:
                    return "older"
            else:
                return "applied"
            # Not older: re-applied, an invalid transition, or a concurrent newer event.
            document = await self.collection.find_one(
                {"_id": shipment_id},
                projection={"status": 1, "lastEventOrder": 1, "history": 1},
            )
            if document is None:
                continue
            if entry_key in (document.get("history") or {}):
                return "already"
            if document["lastEventOrder"] < order:
                if document["status"] in FINAL_STATUSES and status not in FINAL_STATUSES:
                    raise TerminalError(
                        "INVALID_TRANSITION",
                        f"shipment is {document['status']!r}; a later {status!r} is not allowed",
                    )
                continue  # a concurrent event moved the shipment meanwhile: try again
            await self.collection.update_one(
                {"_id": shipment_id}, {"$set": {f"history.{entry_key}": entry}}
            )
            return "older"
        raise TransientError(
            "CONCURRENT_UPDATE", "the shipment kept changing under concurrent updates"
        )
