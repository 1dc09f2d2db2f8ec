"""The store: three Beanie documents on MongoDB and the client that opens them.

- ``processed_events``: the idempotency ledger, one record per idempotency key, with a lease;
- ``active_shipments``: the business effect, one document per shipment with its full history;
- ``dead_letter_events``: events that could not be processed, with every attempt, for review.

Atomic operations go through the documents' pymongo collections (Beanie declares the models and
creates the indexes and TTLs at start-up); everything here is plain MongoDB, nothing
nx-27017-specific (see ``docs/data-model.md`` for what differs on the embedded store).
"""

from courier_gateway.store.connection import open_store
from courier_gateway.store.documents import (
    ActiveShipment,
    AttemptRecord,
    DeadLetterEvent,
    HistoryEntry,
    ProcessedEvent,
    ReplayRecord,
)

__all__ = [
    "ActiveShipment",
    "AttemptRecord",
    "DeadLetterEvent",
    "HistoryEntry",
    "ProcessedEvent",
    "ReplayRecord",
    "open_store",
]
