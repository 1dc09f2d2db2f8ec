"""Read-only queries for the operator commands (``courier-gateway events`` and ``deadletters``).

Every read the commands make is here, so a change of the documents (tenancy, for one) is
adapted in one place. An event belongs to a tenant, the authenticated source it was posted to;
:func:`tenant_filter` is the one place that says how a document names it.

Grouping and time windows over dead letters are done here rather than in the query: the
embedded store cannot group by several fields and keeps a re-opened dead letter's time as text,
and doing it in Python gives the same answer on MongoDB and on nx-27017.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.database import Database

from courier_gateway.store.documents import ActiveShipment, DeadLetterEvent, ProcessedEvent
from courier_gateway.timestamps import as_utc

__all__ = [
    "Window",
    "dead_letters",
    "dead_letters_of_event",
    "event_records",
    "list_events",
    "record_by_key",
    "shipment",
    "tenant_filter",
]

Document = dict[str, Any]
_LEDGER = str(ProcessedEvent.Settings.name)
_SHIPMENTS = str(ActiveShipment.Settings.name)
_LETTERS = str(DeadLetterEvent.Settings.name)


@dataclass(frozen=True, slots=True)
class Window:
    """A time range ``[since, until)``; either end may be open."""

    since: datetime | None = None
    until: datetime | None = None

    def holds(self, value: object) -> bool:
        """Whether a stored time (datetime or text) falls in the window."""
        if self.since is None and self.until is None:
            return True
        try:
            moment = as_utc(value)
        except ValueError:
            return False
        if self.since is not None and moment < self.since:
            return False
        return self.until is None or moment < self.until


def tenant_filter(tenant: str) -> Document:
    """The filter for the documents of one tenant (the source events were posted to)."""
    return {"source": tenant}


def event_records(database: Database[Document], tenant: str, event_id: str) -> list[Document]:
    """The ledger records of an event (usually one; more when it was sent with several keys)."""
    query = {**tenant_filter(tenant), "eventId": event_id}
    return list(database[_LEDGER].find(query).limit(20))


def record_by_key(database: Database[Document], tenant: str, key: str) -> Document | None:
    """The ledger record of an idempotency key of a tenant, if any."""
    return database[_LEDGER].find_one({**tenant_filter(tenant), "idempotencyKey": key})


def dead_letters_of_event(
    database: Database[Document], tenant: str, event_id: str, keys: Sequence[str] = ()
) -> list[Document]:
    """The dead letters of an event, by event id or by any of its idempotency keys."""
    tenant_only = tenant_filter(tenant)
    found = {
        str(letter["_id"]): letter
        for letter in database[_LETTERS].find({**tenant_only, "eventId": event_id}).limit(20)
    }
    for key in keys:
        letter = database[_LETTERS].find_one({**tenant_only, "idempotencyKey": key})
        if letter is not None:
            found[str(letter["_id"])] = letter
    return list(found.values())


def shipment(database: Database[Document], shipment_id: str) -> Document | None:
    """A shipment's current state and history."""
    return database[_SHIPMENTS].find_one({"_id": shipment_id})


def list_events(
    database: Database[Document],
    *,
    tenants: Sequence[str],
    statuses: Sequence[str],
    window: Window,
    limit: int,
) -> list[Document]:
    """Ledger records, newest first, of the given tenants and statuses created in ``window``."""
    query: Document = {}
    if tenants:
        query["$or"] = [tenant_filter(tenant) for tenant in tenants]
    if statuses:
        query["status"] = {"$in": list(statuses)}
    created: Document = {}
    if window.since is not None:
        created["$gte"] = window.since
    if window.until is not None:
        created["$lt"] = window.until
    if created:
        query["createdAt"] = created
    if "$or" in query and len(query) > 1:
        # The embedded store ignores fields beside a top-level $or: state both as an $and.
        query = {"$and": [{"$or": query.pop("$or")}, query]}
    cursor = database[_LEDGER].find(query, sort=[("createdAt", -1)]).limit(limit)
    return list(cursor)


def dead_letters(
    database: Database[Document],
    *,
    statuses: Sequence[str],
    tenants: Sequence[str] = (),
    reasons: Sequence[str] = (),
    window: Window = Window(),
    projection: Sequence[str] | None = None,
) -> Iterator[Document]:
    """Dead letters in a review status (all when empty), oldest first, filtered."""
    query: Document = {}
    if statuses:
        query["reviewStatus"] = {"$in": list(statuses)}
    if reasons:
        query["reasonCode"] = {"$in": list(reasons)}
    if tenants:
        query["$or"] = [tenant_filter(tenant) for tenant in tenants]
    if "$or" in query and len(query) > 1:
        query = {"$and": [{"$or": query.pop("$or")}, query]}
    fields = None if projection is None else dict.fromkeys(projection, 1)
    # Oldest first: ObjectIds grow with insertion time on every MongoDB-compatible store.
    for letter in database[_LETTERS].find(query, fields, sort=[("_id", 1)]):
        if window.holds(letter.get("deadLetteredAt")):
            yield letter
