"""The queue's state as one reader sees it: lag, retries waiting and dead letters pending.

The worker exports these as metrics; the operator reads them straight from Redis to scale the
worker and to fill the CourierGateway status, so both use this one definition. The dead-letter
count lives in MongoDB; the worker copies it into a small Redis key (``{stream}:state``) so that
the operator needs no store connection.
"""

from __future__ import annotations

from dataclasses import dataclass

from courier_gateway.queue.registry import CONSUMER_GROUP, recorded_streams
from courier_gateway.queue.retry_schedule import retries_key
from courier_gateway.queue.topology import AsyncRedis

__all__ = [
    "QueueState",
    "publish_dead_letters_pending",
    "read_queue_state",
    "replay_summary_key",
    "state_key",
]

# The worker refreshes the count every few seconds; an hour without a refresh means no worker
# runs, and an old figure is then better reported as unknown than as current.
_STATE_TTL_SECONDS = 3600


def state_key(stream: str) -> str:
    """The Redis hash where the worker publishes what only the store knows."""
    return f"{stream}:state"


def replay_summary_key(stream: str, request_id: str) -> str:
    """Where ``courier-gateway replay --request-id`` leaves its summary for the operator."""
    return f"{stream}:replay:{request_id}"


@dataclass(frozen=True, slots=True)
class QueueState:
    """Undelivered and pending (delivered, unacknowledged) entries, retries, dead letters."""

    undelivered: int
    pending: int
    retries_scheduled: int
    dead_letters_pending: int | None

    @property
    def lag(self) -> int:
        """Entries some worker still has to finish: the figure the worker is scaled on."""
        return self.undelivered + self.pending


async def read_queue_state(redis: AsyncRedis, stream: str) -> QueueState:
    """The state of the queue ``stream``, summed over every partition it ever had.

    Zeros when nothing exists yet. A queue written only by versions before the partition
    registry is read as its one stream.
    """
    streams = await recorded_streams(redis, stream) or [stream]
    undelivered = pending = retries = 0
    for name in streams:
        waiting, delivered = await _stream_lag(redis, name)
        undelivered += waiting
        pending += delivered
        retries += int(await redis.zcard(retries_key(name)))
    raw = await redis.hget(state_key(stream), "deadLettersPending")
    return QueueState(
        undelivered=undelivered,
        pending=pending,
        retries_scheduled=retries,
        dead_letters_pending=int(raw) if raw is not None else None,
    )


async def _stream_lag(redis: AsyncRedis, stream: str) -> tuple[int, int]:
    """(undelivered, pending) entries of one stream's consumer group."""
    if not await redis.exists(stream):
        return 0, 0
    for group in await redis.xinfo_groups(stream):
        name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
        if name == CONSUMER_GROUP:
            lag = group.get("lag")
            undelivered = int(lag) if lag is not None else int(await redis.xlen(stream))
            return undelivered, int(group["pending"])
    return 0, 0


async def publish_dead_letters_pending(redis: AsyncRedis, stream: str, count: int) -> None:
    """Record the pending dead-letter count for readers without a store connection."""
    key = state_key(stream)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hset(key, "deadLettersPending", count)
        pipe.expire(key, _STATE_TTL_SECONDS)
        await pipe.execute()
