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
from courier_gateway.tenancy import scoped
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
    "tenant_of",
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


def tenant_filter(tenants: Sequence[str]) -> Document:
    """The documents of any of ``tenants`` (the sources events were posted to).

    A document written before tenancy has no ``tenant`` (``courier-gateway migrate`` adds it)
    and counts as its recorded source's, as ``replay`` counts it.
    """
    wanted = {"$in": list(tenants)}
    return {"$or": [{"tenant": wanted}, {"tenant": None, "source": wanted}]}


def _all(*conditions: Document) -> Document:
    # $and rather than sibling fields beside a $or: the embedded store ignores those.
    given = [condition for condition in conditions if condition]
    if not given:
        return {}
    return given[0] if len(given) == 1 else {"$and": given}


def _of_tenant(collection: Any, tenant: str, condition: Document, limit: int) -> list[Document]:
    """Documents of ``tenant`` matching ``condition``: through the ``(tenant, …)`` index first,
    and only when none is found among documents written before tenancy."""
    found = list(collection.find({"tenant": tenant, **condition}).limit(limit))
    if not found:
        legacy = {"tenant": None, "source": tenant, **condition}
        found = list(collection.find(legacy).limit(limit))
    return found


def event_records(database: Database[Document], tenant: str, event_id: str) -> list[Document]:
    """The ledger records of an event (usually one; more when it was sent with several keys)."""
    return _of_tenant(database[_LEDGER], tenant, {"eventId": event_id}, 20)


def record_by_key(database: Database[Document], tenant: str, key: str) -> Document | None:
    """The ledger record of an idempotency key of a tenant, if any (by its primary key)."""
    return database[_LEDGER].find_one({"_id": scoped(tenant, key)})


def dead_letters_of_event(
    database: Database[Document], tenant: str, event_id: str, keys: Sequence[str] = ()
) -> list[Document]:
    """The dead letters of an event, by event id or by any of its idempotency keys."""
    letters = database[_LETTERS]
    found = {
        str(letter["_id"]): letter
        for letter in _of_tenant(letters, tenant, {"eventId": event_id}, 20)
    }
    for key in keys:
        for letter in _of_tenant(letters, tenant, {"idempotencyKey": key}, 1):
            found[str(letter["_id"])] = letter
    return list(found.values())


def shipment(
    database: Database[Document], shipment_id: str, namespaces: Sequence[str]
) -> Document | None:
    """A shipment's current state and history, in the first of ``namespaces`` that has it."""
    ids = [scoped(namespace, shipment_id) for namespace in dict.fromkeys(namespaces)]
    found = {
        document["_id"]: document for document in database[_SHIPMENTS].find({"_id": {"$in": ids}})
    }
    return next((found[stored] for stored in ids if stored in found), None)


def list_events(
    database: Database[Document],
    *,
    tenants: Sequence[str],
    statuses: Sequence[str],
    window: Window,
    limit: int,
) -> list[Document]:
    """Ledger records, newest first, of the given tenants and statuses created in ``window``."""
    created: Document = {}
    if window.since is not None:
        created["$gte"] = window.since
    if window.until is not None:
        created["$lt"] = window.until
    query = _all(
        tenant_filter(tenants) if tenants else {},
        {"status": {"$in": list(statuses)}} if statuses else {},
        {"createdAt": created} if created else {},
    )
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
    query = _all(
        {"reviewStatus": {"$in": list(statuses)}} if statuses else {},
        {"reasonCode": {"$in": list(reasons)}} if reasons else {},
        tenant_filter(tenants) if tenants else {},
    )
    fields = None if projection is None else dict.fromkeys([*projection, "tenant"], 1)
    # Oldest first: ObjectIds grow with insertion time on every MongoDB-compatible store.
    for letter in database[_LETTERS].find(query, fields, sort=[("_id", 1)]):
        if window.holds(letter.get("deadLetteredAt")):
            yield letter


def tenant_of(document: Document) -> str:
    """The tenant a document belongs to (its recorded source when written before tenancy)."""
    return str(document.get("tenant") or document.get("source"))
