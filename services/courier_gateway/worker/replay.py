"""Replaying dead letters back onto the stream (``courier-gateway replay``).

A replay re-enqueues the stored original event with its attempt history and a ``replay`` marker
that lets the worker re-open the key's dead-lettered ledger record. The message is written
before the dead letter is marked ``replayed``: a crash in between leaves the entry pending, and
running the replay again at worst enqueues a second copy, which the ledger absorbs. An entry
already replayed under the same request id is skipped, so re-running a request is harmless.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pymongo.asynchronous.collection import AsyncCollection

from courier_gateway.adapters import AdapterRegistry, Ignored, Mapped, PayloadError
from courier_gateway.queue import encode_message
from courier_gateway.queue.layout import QueueLayout
from courier_gateway.queue.messages import tenant_of
from courier_gateway.queue.topology import AsyncRedis, replicated
from courier_gateway.store import DeadLetterEvent
from courier_gateway.timestamps import rfc3339
from courier_gateway.worker.ledger import now

__all__ = ["ReplayResult", "Selection", "replay"]

_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")
#: How long a replayed copy may wait for ENQUEUE_MIN_REPLICAS replicas (below the replay's 5 s
#: socket timeout); unconfirmed, the entry is reported failed and stays pending.
_REPLICATION_WAIT_MS = 4000


@dataclass(frozen=True, slots=True)
class Selection:
    """Which pending dead letters to act on; every given criterion must match."""

    event_ids: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100

    def query(self) -> dict[str, Any]:
        """The MongoDB filter for pending dead letters matching the selection.

        Sources are tenants (the source that authenticated the event); a dead letter written
        before tenancy has no tenant and is matched by the source it recorded.
        """
        conditions: list[dict[str, Any]] = [{"reviewStatus": "pending"}]
        if self.event_ids:
            conditions.append({"eventId": {"$in": list(self.event_ids)}})
        if self.reasons:
            conditions.append({"reasonCode": {"$in": list(self.reasons)}})
        if self.sources:
            wanted = {"$in": list(self.sources)}
            conditions.append({"$or": [{"tenant": wanted}, {"tenant": None, "source": wanted}]})
        # $and, not sibling fields beside a $or: the embedded test store ignores those.
        return conditions[0] if len(conditions) == 1 else {"$and": conditions}

    def in_window(self, dead_lettered_at: Any) -> bool:
        """Whether a dead letter's time falls in ``[since, until)``.

        Checked here rather than in the query: the embedded test store keeps ``$set`` datetimes
        as text, and this comparison holds for both forms.
        """
        moment = _as_datetime(dead_lettered_at)
        if self.since is not None and moment < self.since:
            return False
        return self.until is None or moment < self.until


@dataclass
class ReplayResult:
    """What a replay run did, entry by entry and in total."""

    action: Literal["replay", "discard"]
    dry_run: bool
    request_id: str
    matched: int = 0
    replayed: int = 0
    discarded: int = 0
    skipped: int = 0
    failed: int = 0
    entries: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The JSON summary."""
        return {
            "requestId": self.request_id,
            "action": self.action,
            "dryRun": self.dry_run,
            "matched": self.matched,
            "replayed": self.replayed,
            "discarded": self.discarded,
            "skipped": self.skipped,
            "failed": self.failed,
            "entries": self.entries,
        }


def _traceparent(trace_id: str) -> str:
    trace = trace_id if _TRACE_ID.match(trace_id) else os.urandom(16).hex()
    return f"00-{trace}-{os.urandom(8).hex()}-01"


def _tenant(letter: dict[str, Any]) -> str:
    """The dead letter's tenant; one written before tenancy counts as its recorded source's."""
    tenant: str = letter.get("tenant") or letter["source"]
    return tenant


def _envelope(
    letter: dict[str, Any], request_id: str, event: dict[str, Any] | None = None
) -> dict[str, Any]:
    attempts = [
        {**attempt, "startedAt": _iso(attempt["startedAt"]), "endedAt": _iso(attempt["endedAt"])}
        for attempt in letter.get("attempts", [])
    ]
    tenant = _tenant(letter)
    envelope: dict[str, Any] = {
        "event": event or letter["event"],
        "receivedAt": letter["receivedAt"],
        "traceId": letter["traceId"],
        "source": tenant,
        "shipmentNamespace": letter.get("shipmentNamespace") or tenant,
        "keyId": letter.get("keyId"),
        "attempt": 1,
        "round": int(letter.get("deadLetterCount", 1)) + 1,
        "attempts": attempts,
        "replay": {"requestId": request_id, "deadLetterId": str(letter["_id"])},
    }
    if letter.get("adapter"):
        envelope["adapter"] = letter["adapter"]
    return envelope


@dataclass(frozen=True, slots=True)
class _Remapped:
    """What the adapter as it is now makes of an UNMAPPED dead letter's original item."""

    event: dict[str, Any] | None = None  # mapped: replay this event
    ignored: str | None = None  # the adapter now ignores it: discard
    skipped: str | None = None  # still unmapped, or no such adapter here: leave pending


def _remap(
    letter: dict[str, Any], adapters: AdapterRegistry | None, override: str | None
) -> _Remapped:
    """Re-map the stored original; PayloadError when it no longer fits the adapter's shape."""
    unmapped = letter["unmapped"]
    name = override or unmapped.get("adapter") or ""
    adapter = adapters.get(name) if adapters is not None else None
    if adapter is None:
        return _Remapped(skipped=f"adapter {name!r} is not known here (ADAPTERS_DIR?)")
    outcome = adapter.remap(unmapped["original"], source=_tenant(letter))
    if isinstance(outcome, Mapped):
        return _Remapped(event=outcome.event)
    if isinstance(outcome, Ignored):
        return _Remapped(ignored=outcome.reason)
    return _Remapped(skipped=f"still unmapped: {outcome.check}: {outcome.message}")


def _as_datetime(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


@dataclass
class _Run:
    """One replay run: acts on dead letters one by one, recording each outcome."""

    letters: AsyncCollection[dict[str, Any]]
    redis: AsyncRedis
    layout: QueueLayout
    min_replicas: int
    request_id: str
    result: ReplayResult
    interval: float
    adapters: AdapterRegistry | None
    adapter_override: str | None
    actor: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    next_at: float = field(default_factory=time.monotonic)

    async def one(self, letter: dict[str, Any], entry: dict[str, Any]) -> None:
        result = self.result
        if any(r.get("requestId") == self.request_id for r in letter.get("replays", [])):
            entry["result"] = "skipped (already replayed by this request)"
            result.skipped += 1
            return
        remapped: _Remapped | None = None
        if letter.get("unmapped") and result.action == "replay":
            remapped = self._remapped(letter, entry)
            if remapped is None:
                return
        if result.dry_run:
            entry["result"] = _would(result.action, remapped)
            return
        try:
            if remapped is not None and remapped.ignored is not None:
                await self._discard(
                    letter, entry, f"the adapter now ignores it: {remapped.ignored}"
                )
            elif result.action == "discard":
                await self._discard(letter, entry, None)
            else:
                await self._replay(letter, entry, remapped)
        except Exception as error:  # one entry's failure must not stop the rest
            entry["result"] = f"failed: {type(error).__name__}: {str(error)[:200]}"
            result.failed += 1

    def _remapped(self, letter: dict[str, Any], entry: dict[str, Any]) -> _Remapped | None:
        """The re-mapping of an UNMAPPED letter, or ``None`` when it is not to be acted on."""
        try:
            remapped = _remap(letter, self.adapters, self.adapter_override)
        except PayloadError as error:
            entry["result"] = f"failed: the original no longer fits the adapter: {error}"
            self.result.failed += 1
            return None
        if remapped.skipped is not None:
            entry["result"] = f"skipped ({remapped.skipped})"
            self.result.skipped += 1
            return None
        return remapped

    async def _discard(
        self, letter: dict[str, Any], entry: dict[str, Any], why: str | None
    ) -> None:
        changed = await self.letters.update_one(
            {"_id": letter["_id"], "reviewStatus": "pending"},
            {"$set": {"reviewStatus": "discarded", "discardedAt": now()}},
        )
        if changed.matched_count:
            entry["result"] = f"discarded ({why})" if why else "discarded"
        else:
            entry["result"] = "skipped (changed meanwhile)"
        self.result.discarded += changed.matched_count
        self.result.skipped += 1 - changed.matched_count

    async def _replay(
        self, letter: dict[str, Any], entry: dict[str, Any], remapped: _Remapped | None
    ) -> None:
        await asyncio.sleep(max(0.0, self.next_at - time.monotonic()))
        self.next_at = max(self.next_at, time.monotonic()) + self.interval
        envelope = _envelope(letter, self.request_id, remapped.event if remapped else None)
        labels = {
            "traceparent": _traceparent(letter["traceId"]),
            "traceId": letter["traceId"],
            "source": _tenant(letter),
        }
        message = encode_message(envelope, labels)
        partition = self.layout.partition_for(
            tenant_of(envelope), str(envelope["event"]["idempotencyKey"])
        )
        # The dead letter is marked replayed right after: with ENQUEUE_MIN_REPLICAS, only once
        # replicas hold the copy, or a failover could lose the event and keep the mark.
        await replicated(
            self.redis,
            [partition.stream],
            lambda pipe: pipe.xadd(partition.stream, {"data": message}),
            replicas=self.min_replicas,
            wait_ms=_REPLICATION_WAIT_MS,
        )
        replays = [
            *letter.get("replays", []),
            {"requestId": self.request_id, "at": now(), "by": self.actor},
        ]
        marked = await self.letters.update_one(
            {"_id": letter["_id"], "deadLetterCount": letter.get("deadLetterCount", 1)},
            {"$set": {"reviewStatus": "replayed", "replays": replays}},
        )
        if marked.matched_count == 0:
            # The replayed copy already failed again and re-opened the entry: keep it
            # pending, but record this replay in its history.
            await self.letters.update_one({"_id": letter["_id"]}, {"$set": {"replays": replays}})
        entry["result"] = "replayed" + (" (re-mapped)" if remapped else "")
        self.result.replayed += 1


def _would(action: str, remapped: _Remapped | None) -> str:
    if remapped is not None and remapped.ignored is not None:
        return f"would be discarded (the adapter now ignores it: {remapped.ignored})"
    text = f"would be {'discarded' if action == 'discard' else 'replayed'}"
    if remapped is not None and remapped.event is not None:
        text += f" (re-mapped: {remapped.event['payload']['status']})"
    return text


async def replay(
    *,
    collection: AsyncCollection[dict[str, Any]] | None = None,
    redis: AsyncRedis,
    layout: QueueLayout,
    selection: Selection,
    request_id: str,
    rate: float,
    dry_run: bool,
    discard: bool,
    on_entry: Callable[[dict[str, Any]], None] | None = None,
    adapters: AdapterRegistry | None = None,
    adapter_override: str | None = None,
    min_replicas: int = 0,
) -> ReplayResult:
    """Replay (or discard) the selected dead letters at most ``rate`` per second.

    ``on_entry`` is called with each matched entry as it is taken up (for a progress line).

    An ``UNMAPPED`` dead letter is re-mapped from its provider's original item with the adapter
    as it is now (``adapters``; ``adapter_override`` names another one): replayed when it maps,
    discarded when the adapter now ignores it, left pending when it still does not map.
    """
    letters: AsyncCollection[dict[str, Any]] = (
        collection or DeadLetterEvent.get_pymongo_collection()
    )
    result = ReplayResult("discard" if discard else "replay", dry_run, request_id)
    run = _Run(
        letters,
        redis,
        layout,
        min_replicas,
        request_id,
        result,
        1.0 / rate,
        adapters,
        adapter_override,
    )
    # Oldest first: ObjectIds grow with insertion time on every MongoDB-compatible store.
    cursor = letters.find(selection.query(), sort=[("_id", 1)])
    async for letter in cursor:
        if not selection.in_window(letter["deadLetteredAt"]):
            continue
        if result.matched >= selection.limit:
            break
        result.matched += 1
        entry = {
            "eventId": letter["eventId"],
            "idempotencyKey": letter["idempotencyKey"],
            "source": _tenant(letter),
            "reasonCode": letter["reasonCode"],
            "deadLetteredAt": rfc3339(letter["deadLetteredAt"]),
        }
        result.entries.append(entry)
        if on_entry is not None:
            on_entry(entry)
        await run.one(letter, entry)
    return result
