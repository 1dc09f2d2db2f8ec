"""The collections' documents, indexes and TTLs (DESIGN §6).

Lists of sub-documents (attempts, replays) are written whole with ``$set`` by the single holder
of a lease, and a shipment's history is a map written entry by entry with ``$set``; nothing is
appended with ``$push``. That keeps each write idempotent and works identically on MongoDB and on
the embedded store.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from beanie import Document
from pydantic import BaseModel, Field
from pymongo import ASCENDING, IndexModel

__all__ = [
    "LEDGER_TTL_SECONDS",
    "ActiveShipment",
    "AttemptRecord",
    "DeadLetterEvent",
    "HistoryEntry",
    "ProcessedEvent",
    "ReplayRecord",
]

LEDGER_TTL_SECONDS = 30 * 86400
DEAD_LETTER_TTL_SECONDS = 90 * 86400


class AttemptRecord(BaseModel):
    """One processing attempt: when, where, and how it ended."""

    number: int
    round: int = 1
    startedAt: datetime  # noqa: N815 - stored field names follow the API's camelCase
    endedAt: datetime  # noqa: N815
    worker: str
    outcome: Literal["processed", "retry", "deferred", "dead_lettered"]
    errorCode: str | None = None  # noqa: N815
    errorMessage: str | None = None  # noqa: N815


class ProcessedEvent(Document):
    """The idempotency ledger: who holds an event (lease) and how it ended.

    ``_id`` is the idempotency key scoped by the tenant (:func:`courier_gateway.tenancy.scoped`):
    unique by construction, found through the primary key.
    """

    id: str | None = Field(default=None, description="the scoped idempotency key")  # type: ignore[assignment]
    idempotencyKey: str  # noqa: N815
    #: The source that authenticated the event; absent on records written before tenancy.
    tenant: str | None = None
    eventId: str  # noqa: N815
    #: The body's ``source`` (descriptive only).
    source: str
    shipmentId: str  # noqa: N815
    traceId: str  # noqa: N815
    status: Literal["processing", "processed", "dead_lettered"]
    leaseOwner: str | None = None  # noqa: N815
    #: Epoch milliseconds; 0 when nobody holds the key.
    leaseUntilMs: int = 0  # noqa: N815
    appliedAt: datetime | None = None  # noqa: N815
    processedAt: datetime | None = None  # noqa: N815
    #: The lease token of the attempt that wrote the terminal status.
    finishedBy: str | None = None  # noqa: N815
    attempts: list[AttemptRecord] = Field(default_factory=list)
    createdAt: datetime  # noqa: N815

    class Settings:
        name = "processed_events"
        indexes: ClassVar[list[IndexModel]] = [
            IndexModel([("createdAt", ASCENDING)], expireAfterSeconds=LEDGER_TTL_SECONDS),
            # "What happened to event X of source S?" without knowing its idempotency key.
            IndexModel([("tenant", ASCENDING), ("eventId", ASCENDING)]),
        ]


class HistoryEntry(BaseModel):
    """One event applied to a shipment (current or not: older events join the history too)."""

    idempotencyKey: str  # noqa: N815
    eventId: str  # noqa: N815
    eventType: str  # noqa: N815
    status: str
    occurredAt: datetime  # noqa: N815
    source: str
    #: The source that authenticated the event (absent on entries written before tenancy).
    tenant: str | None = None
    receivedAt: str  # noqa: N815


class ActiveShipment(Document):
    """A shipment's current state (from its latest event) and its whole history.

    ``_id`` is the shipment id scoped by its namespace (:func:`courier_gateway.tenancy.scoped`);
    ``shipmentId`` and ``namespace`` repeat its parts for readers of the collection.
    """

    id: str | None = Field(default=None, description="the scoped shipment id")  # type: ignore[assignment]
    shipmentId: str  # noqa: N815
    #: The shipment namespace (the source's name unless shared); absent before tenancy.
    namespace: str | None = None
    orderId: str | None = None  # noqa: N815
    status: str | None
    lastEventId: str | None = None  # noqa: N815
    lastOccurredAt: datetime | None = None  # noqa: N815
    #: ``occurredAt`` (UTC, fixed width) + ``|`` + ``eventId``: one string orders events totally.
    lastEventOrder: str  # noqa: N815
    #: ``lastEventOrder`` while the shipment is open, ``"~"`` (above every order) once final:
    #: the one field a newer non-final event's guarded upsert compares.
    openEventOrder: str  # noqa: N815
    #: Every applied event, keyed by a digest of its idempotency key (so each appears once).
    history: dict[str, HistoryEntry]
    createdAt: datetime  # noqa: N815
    updatedAt: datetime | None = None  # noqa: N815

    class Settings:
        name = "active_shipments"


class ReplayRecord(BaseModel):
    """One replay of a dead letter."""

    requestId: str  # noqa: N815
    at: datetime
    by: str


class DeadLetterEvent(Document):
    """An event that could not be processed; one per tenant and idempotency key, re-opened on
    new failure."""

    idempotencyKey: str  # noqa: N815
    #: The source that authenticated the event; absent on records written before tenancy.
    tenant: str | None = None
    #: Where the event's shipment lives (replays need it; absent before tenancy).
    shipmentNamespace: str | None = None  # noqa: N815
    eventId: str  # noqa: N815
    #: The body's ``source`` (descriptive only).
    source: str
    reasonCode: str  # noqa: N815
    reasonMessage: str  # noqa: N815
    attempts: list[AttemptRecord]
    event: dict[str, Any]
    traceId: str  # noqa: N815
    receivedAt: str  # noqa: N815
    keyId: str | None = None  # noqa: N815
    reviewStatus: Literal["pending", "replayed", "discarded"]  # noqa: N815
    deadLetteredAt: datetime  # noqa: N815
    deadLetterCount: int = 1  # noqa: N815
    replays: list[ReplayRecord] = Field(default_factory=list)

    class Settings:
        name = "dead_letter_events"
        indexes: ClassVar[list[IndexModel]] = [
            IndexModel([("tenant", ASCENDING), ("idempotencyKey", ASCENDING)], unique=True),
            IndexModel([("tenant", ASCENDING), ("eventId", ASCENDING)]),
            IndexModel([("reviewStatus", ASCENDING), ("reasonCode", ASCENDING)]),
            IndexModel([("deadLetteredAt", ASCENDING)], expireAfterSeconds=DEAD_LETTER_TTL_SECONDS),
        ]
