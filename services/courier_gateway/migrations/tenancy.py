"""Moving documents written before tenancy into their tenants' namespaces.

Before tenancy every id was global: the ledger and dead letters were keyed by the idempotency
key alone and shipments by the shipment id. Those documents carry no ``tenant`` (ledger, dead
letters) or ``namespace`` (shipments). The default source ``courier`` keeps bare ids, so its
documents are already where they belong; this migration moves the others'.

Who owned a legacy document is read from the ``source`` it recorded, which was the body's. On
every source but the default one the body's source had to equal the URL's, so it *is* the
authenticated source; on the default source it could name any courier. The rule is therefore:
a recorded source that is a configured source other than ``courier`` owns the document, and
everything else belongs to ``courier``. (The one ambiguous case, an event posted to the default
source whose body named another configured source, is given to that source.)

A legacy shipment may hold events of several sources (the cross-source overwrite tenancy
fixes): its history is split by owner, and each owner's namespace gets a shipment whose current
state is computed from that owner's events only, so each namespace continues from exactly what
its own events said. Every step is idempotent and safe to re-run; a ledger record whose lease
is still live (an event in flight in a worker of the previous version) is left for a later run.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from courier_gateway.tenancy import DEFAULT_SOURCE, scoped
from courier_gateway.worker.shipments import CLOSED, FINAL_STATUSES, history_key, order_key

__all__ = ["Ownership", "TenancyReport", "migrate_to_tenancy"]

_LEGACY = {"tenant": None}


@dataclass(frozen=True, slots=True)
class Ownership:
    """Which tenant owns a legacy document, and where each tenant's shipments live."""

    #: Configured source name -> its shipment namespace.
    namespaces: dict[str, str]

    def owner(self, recorded_source: str | None) -> str:
        """The tenant of a document that recorded ``recorded_source`` (see the module doc)."""
        if recorded_source and recorded_source in self.namespaces:
            return recorded_source
        return DEFAULT_SOURCE

    def namespace(self, tenant: str) -> str:
        """The shipment namespace of ``tenant``."""
        return self.namespaces.get(tenant, tenant)


@dataclass
class TenancyReport:
    """What a migration run changed (or, in a dry run, would change)."""

    ledger_adopted: int = 0
    ledger_moved: int = 0
    ledger_in_flight: int = 0
    dead_letters_adopted: int = 0
    dead_letters_conflicting: int = 0
    shipments_adopted: int = 0
    shipments_split: int = 0
    moved_to: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The JSON summary."""
        return {
            "ledger": {
                "adopted": self.ledger_adopted,
                "moved": self.ledger_moved,
                "inFlightLeftForLater": self.ledger_in_flight,
            },
            "deadLetters": {
                "adopted": self.dead_letters_adopted,
                "conflicting": self.dead_letters_conflicting,
            },
            "shipments": {
                "adopted": self.shipments_adopted,
                "split": self.shipments_split,
                "movedTo": dict(sorted(self.moved_to.items())),
            },
        }

    @property
    def complete(self) -> bool:
        """Whether nothing was left for a later run."""
        return self.ledger_in_flight == 0 and self.dead_letters_conflicting == 0


async def migrate_to_tenancy(
    database: AsyncDatabase[dict[str, Any]], ownership: Ownership
) -> TenancyReport:
    """Move every legacy document of ``database`` into its tenant's namespace; idempotent."""
    report = TenancyReport()
    await _migrate_ledger(database, ownership, report)
    await _migrate_dead_letters(database, ownership, report)
    await _migrate_shipments(database, ownership, report)
    return report


async def _migrate_ledger(
    database: AsyncDatabase[dict[str, Any]], ownership: Ownership, report: TenancyReport
) -> None:
    ledger = database["processed_events"]
    now_ms = int(time.time() * 1000)
    async for record in ledger.find(_LEGACY):
        if record.get("status") == "processing" and int(record.get("leaseUntilMs") or 0) > now_ms:
            report.ledger_in_flight += 1
            continue
        tenant = ownership.owner(record.get("source"))
        target = scoped(tenant, record.get("idempotencyKey") or record["_id"])
        if target == record["_id"]:
            await ledger.update_one({"_id": record["_id"]}, {"$set": {"tenant": tenant}})
            report.ledger_adopted += 1
            continue
        # A DuplicateKeyError means the tenant already has a newer record of this key: it wins.
        with contextlib.suppress(DuplicateKeyError):
            await ledger.insert_one({**record, "_id": target, "tenant": tenant})
        await ledger.delete_one({"_id": record["_id"], "tenant": None})
        report.ledger_moved += 1


async def _migrate_dead_letters(
    database: AsyncDatabase[dict[str, Any]], ownership: Ownership, report: TenancyReport
) -> None:
    letters = database["dead_letter_events"]
    async for letter in letters.find(_LEGACY):
        tenant = ownership.owner(letter.get("source"))
        try:
            await letters.update_one(
                {"_id": letter["_id"]},
                {"$set": {"tenant": tenant, "shipmentNamespace": ownership.namespace(tenant)}},
            )
        except DuplicateKeyError:
            # The tenant already has a dead letter for this key (written after the upgrade):
            # keep both for review rather than merge two failure histories blindly.
            report.dead_letters_conflicting += 1
            continue
        report.dead_letters_adopted += 1


async def _migrate_shipments(
    database: AsyncDatabase[dict[str, Any]], ownership: Ownership, report: TenancyReport
) -> None:
    shipments = database["active_shipments"]
    async for shipment in shipments.find({"namespace": None}):
        groups: dict[str, dict[str, dict[str, Any]]] = {}
        for stored in (shipment.get("history") or {}).values():
            tenant = stored.get("tenant") or ownership.owner(stored.get("source"))
            key = history_key(scoped(tenant, stored["idempotencyKey"]))
            groups.setdefault(ownership.namespace(tenant), {})[key] = {**stored, "tenant": tenant}
        shipment_id = shipment.get("shipmentId") or shipment["_id"]
        stays = groups.pop(DEFAULT_SOURCE, {})
        for namespace, entries in groups.items():
            await _merge_into(
                shipments, scoped(namespace, shipment_id), namespace, shipment, entries
            )
            report.moved_to[namespace] = report.moved_to.get(namespace, 0) + 1
        if not groups:  # every event was the default source's: the shipment is in place
            await shipments.update_one(
                {"_id": shipment["_id"]}, {"$set": {"namespace": DEFAULT_SOURCE}}
            )
            report.shipments_adopted += 1
            continue
        report.shipments_split += 1
        if stays:  # keep the default source's own events, and the state they make
            await shipments.update_one(
                {"_id": shipment["_id"]},
                {"$set": {**_current(stays), "namespace": DEFAULT_SOURCE, "history": stays}},
            )
        else:
            await shipments.delete_one({"_id": shipment["_id"], "namespace": None})


async def _merge_into(
    shipments: Any,
    target: str,
    namespace: str,
    legacy: dict[str, Any],
    entries: dict[str, dict[str, Any]],
) -> None:
    """Merge one owner's legacy events into its namespace's shipment, never regressing it."""
    current = _current(entries)
    moment = datetime.now(UTC)
    history = {f"history.{key}": entry for key, entry in entries.items()}
    try:
        # The same guard as applying an event: only a later event moves the current state.
        await shipments.update_one(
            {"_id": target, "lastEventOrder": {"$lt": current["lastEventOrder"]}},
            {
                "$set": {**current, **history, "updatedAt": moment},
                "$setOnInsert": {
                    "shipmentId": legacy.get("shipmentId") or legacy["_id"],
                    "namespace": namespace,
                    "orderId": legacy.get("orderId"),
                    "createdAt": legacy.get("createdAt") or moment,
                },
            },
            upsert=True,
        )
    except DuplicateKeyError:
        # The namespace's shipment is already newer: the legacy events only join its history.
        await shipments.update_one({"_id": target}, {"$set": history})


def _current(entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The current-state fields a shipment gets from its latest event among ``entries``."""
    latest = max(entries.values(), key=_order)
    order = _order(latest)
    return {
        "status": latest["status"],
        "lastEventId": latest["eventId"],
        "lastOccurredAt": _moment(latest["occurredAt"]),
        "lastEventOrder": order,
        "openEventOrder": CLOSED if latest["status"] in FINAL_STATUSES else order,
    }


def _order(entry: dict[str, Any]) -> str:
    return order_key(_moment(entry["occurredAt"]), entry["eventId"])


def _moment(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
