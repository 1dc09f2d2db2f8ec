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
from redis.asyncio import Redis

from courier_gateway.queue import encode_message
from courier_gateway.store import DeadLetterEvent
from courier_gateway.timestamps import rfc3339
from courier_gateway.worker.ledger import now

__all__ = ["ReplayResult", "Selection", "replay"]

_TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


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


def _envelope(letter: dict[str, Any], request_id: str) -> dict[str, Any]:
    attempts = [
        {**attempt, "startedAt": _iso(attempt["startedAt"]), "endedAt": _iso(attempt["endedAt"])}
        for attempt in letter.get("attempts", [])
    ]
    tenant = _tenant(letter)
    return {
        "event": letter["event"],
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


def _as_datetime(value: Any) -> datetime:
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


async def replay(
    *,
    collection: AsyncCollection[dict[str, Any]] | None = None,
    redis: Redis,
    stream: str,
    selection: Selection,
    request_id: str,
    rate: float,
    dry_run: bool,
    discard: bool,
    on_entry: Callable[[dict[str, Any]], None] | None = None,
) -> ReplayResult:
    """Replay (or discard) the selected dead letters at most ``rate`` per second.

    ``on_entry`` is called with each matched entry as it is taken up (for a progress line).
    """
    letters: AsyncCollection[dict[str, Any]] = (
        collection or DeadLetterEvent.get_pymongo_collection()
    )
    result = ReplayResult("discard" if discard else "replay", dry_run, request_id)
    actor = f"{socket.gethostname()}-{os.getpid()}"
    # Oldest first: ObjectIds grow with insertion time on every MongoDB-compatible store.
    cursor = letters.find(selection.query(), sort=[("_id", 1)])
    interval = 1.0 / rate
    next_at = time.monotonic()
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
        if any(r.get("requestId") == request_id for r in letter.get("replays", [])):
            entry["result"] = "skipped (already replayed by this request)"
            result.skipped += 1
            continue
        if dry_run:
            entry["result"] = f"would be {'discarded' if discard else 'replayed'}"
            continue
        try:
            if discard:
                changed = await letters.update_one(
                    {"_id": letter["_id"], "reviewStatus": "pending"},
                    {"$set": {"reviewStatus": "discarded", "discardedAt": now()}},
                )
                entry["result"] = (
                    "discarded" if changed.matched_count else "skipped (changed meanwhile)"
                )
                result.discarded += changed.matched_count
                result.skipped += 1 - changed.matched_count
                continue
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at, time.monotonic()) + interval
            envelope = _envelope(letter, request_id)
            labels = {
                "traceparent": _traceparent(letter["traceId"]),
                "traceId": letter["traceId"],
                "source": _tenant(letter),
            }
            await redis.xadd(stream, {"data": encode_message(envelope, labels)})
            replays = [
                *letter.get("replays", []),
                {"requestId": request_id, "at": now(), "by": actor},
            ]
            marked = await letters.update_one(
                {"_id": letter["_id"], "deadLetterCount": letter.get("deadLetterCount", 1)},
                {"$set": {"reviewStatus": "replayed", "replays": replays}},
            )
            if marked.matched_count == 0:
                # The replayed copy already failed again and re-opened the entry: keep it
                # pending, but record this replay in its history.
                await letters.update_one({"_id": letter["_id"]}, {"$set": {"replays": replays}})
            entry["result"] = "replayed"
            result.replayed += 1
        except Exception as error:  # one entry's failure must not stop the rest
            entry["result"] = f"failed: {type(error).__name__}: {str(error)[:200]}"
            result.failed += 1
    return result
