"""Opening the store: one pymongo client, Beanie initialised, indexes and TTLs ensured."""

from __future__ import annotations

from typing import Any

from beanie import init_beanie
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import PyMongoError
from pymongo.monitoring import (
    CommandFailedEvent,
    CommandListener,
    CommandStartedEvent,
    CommandSucceededEvent,
)

from courier_gateway.config import ConfigError, Settings
from courier_gateway.observability.worker_metrics import STORE_OPERATIONS
from courier_gateway.store.documents import ActiveShipment, DeadLetterEvent, ProcessedEvent

__all__ = ["open_store"]

_COUNTED = frozenset(
    {"insert", "update", "delete", "find", "findAndModify", "aggregate", "count", "bulkWrite"}
)


class _RoundTrips(CommandListener):
    """Counts data commands, so round trips per event can be measured (``make bench``)."""

    def started(self, event: CommandStartedEvent) -> None:
        if event.command_name in _COUNTED:
            STORE_OPERATIONS.labels(event.command_name).inc()

    def succeeded(self, event: CommandSucceededEvent) -> None:
        return None

    def failed(self, event: CommandFailedEvent) -> None:
        return None


async def _drop_superseded_indexes(database: AsyncDatabase[dict[str, Any]]) -> None:
    """Drop indexes earlier versions created that now contradict the model.

    Before tenancy a dead letter's idempotency key was unique on its own; two sources may now
    use the same key, so that index (superseded by the unique ``(tenant, idempotencyKey)``)
    would refuse the second source's dead letter.
    """
    letters = database[DeadLetterEvent.Settings.name]
    for name, spec in (await letters.index_information()).items():
        if [field for field, _ in spec["key"]] == ["idempotencyKey"]:
            await letters.drop_index(name)


async def open_store(settings: Settings) -> AsyncMongoClient[dict[str, Any]]:
    """Connect, initialise Beanie and create the indexes (idempotent); return the client.

    Raise :class:`ConfigError` naming ``MONGO_URI`` when the store cannot be reached.

    Timeouts are bounded by ``STORE_TIMEOUT_MS`` so a store outage surfaces as an error the
    worker can retry, instead of a call that hangs for pymongo's default 30 s.
    """
    settings.require("MONGO_URI")
    timeout = settings.store_timeout_ms
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.mongo_uri,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout,
        connectTimeoutMS=timeout,
        socketTimeoutMS=timeout,
        maxPoolSize=max(10, settings.worker_concurrency * 2),
        event_listeners=[_RoundTrips()],
    )
    try:
        database = client[settings.mongo_db]
        await init_beanie(
            database=database,
            document_models=[ProcessedEvent, ActiveShipment, DeadLetterEvent],
        )
        await _drop_superseded_indexes(database)
    except PyMongoError as error:
        await client.close()
        raise ConfigError(
            f"MONGO_URI: the store is not reachable ({type(error).__name__})"
        ) from None
    return client
