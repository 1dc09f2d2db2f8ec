"""Read-only lookups of one event on the queue, for ``courier-gateway events show``.

The ingress never writes the store, so what is known of an event before a worker takes it is
in Redis: the duplicate hint (set atomically with the enqueue; its value is the stream entry id,
which is the enqueue time in milliseconds), the stream entry itself until it is trimmed, and a
retry waiting in the schedule. Nothing here changes anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from courier_gateway.queue.layout import QueueLayout
from courier_gateway.queue.retry_schedule import retries_key
from courier_gateway.queue.topology import SyncRedis

__all__ = ["QueueTrace", "trace_event"]

#: How many scheduled retries are searched for the event: the schedule is usually short, and a
#: lookup must stay cheap when it is not.
_RETRY_SCAN = 10_000


@dataclass(frozen=True, slots=True)
class QueueTrace:
    """What Redis still knows of one idempotency key."""

    entry_id: str | None
    queued_at: datetime | None
    hint_expires_in: int | None
    on_stream: bool
    retry_due_at: datetime | None


def _entry_time(entry_id: str) -> datetime | None:
    try:
        return datetime.fromtimestamp(int(entry_id.split("-", 1)[0]) / 1000, UTC)
    except ValueError:
        return None


def _is_event(message: bytes, tenant: str, idempotency_key: str) -> bool:
    try:
        envelope = orjson.loads(message)["kwargs"]["envelope"]
        event = envelope["event"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return False
    return bool(envelope.get("source") == tenant and event.get("idempotencyKey") == idempotency_key)


def trace_event(
    redis: SyncRedis, layout: QueueLayout, *, tenant: str, idempotency_key: str, event_id: str
) -> QueueTrace:
    """Look the event up in its partition: the duplicate hint, the stream, the retry schedule."""
    partition = layout.partition_for(tenant, idempotency_key)
    stream = partition.stream
    key = partition.hint_key(tenant, idempotency_key)
    raw = redis.get(key)
    entry_id = raw.decode() if isinstance(raw, bytes) else None
    ttl = int(redis.ttl(key)) if entry_id else -2
    on_stream = bool(entry_id and redis.xrange(stream, min=entry_id, max=entry_id, count=1))
    due: datetime | None = None
    schedule: list[tuple[bytes, float]] = redis.zrange(  # type: ignore[assignment]
        retries_key(stream), 0, _RETRY_SCAN - 1, withscores=True
    )
    for message, score in schedule:
        if event_id.encode() in message and _is_event(message, tenant, idempotency_key):
            due = datetime.fromtimestamp(float(score) / 1000, UTC)
            break
    return QueueTrace(
        entry_id=entry_id,
        queued_at=_entry_time(entry_id) if entry_id else None,
        hint_expires_in=ttl if ttl >= 0 else None,
        on_stream=on_stream,
        retry_due_at=due,
    )
