"""The registry of partitions: every stream the ingress ever wrote for a queue.

Changing ``QUEUE_PARTITIONS`` changes which streams new events go to, but entries and retries
already in the previous partitions must still be processed. The ingress records each of its
partition streams here when it starts (and creates their consumer groups at id 0); workers and
the operator read every stream recorded, not just the current layout's, so nothing is stranded
in a partition no one reads.
"""

from __future__ import annotations

from redis.exceptions import ResponseError

from courier_gateway.queue.layout import QueueLayout, registry_key
from courier_gateway.queue.topology import AsyncRedis

__all__ = [
    "CONSUMER_GROUP",
    "ensure_consumer_group",
    "is_missing_group",
    "prepare_partitions",
    "recorded_streams",
    "registered_streams",
]

CONSUMER_GROUP = "courier-workers"


async def ensure_consumer_group(redis: AsyncRedis, stream: str) -> None:
    """Create the stream and its consumer group at id 0 (no-op when they exist)."""
    try:
        await redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
    except ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


def is_missing_group(error: ResponseError) -> bool:
    """Whether Redis refused a stream command because the group (or the stream) is gone."""
    text = str(error)
    return "NOGROUP" in text or "no such key" in text


async def prepare_partitions(redis: AsyncRedis, layout: QueueLayout) -> None:
    """Record the layout's streams and create their consumer groups (idempotent).

    The stream of the historical one-partition layout (``QUEUE_STREAM`` itself), written by
    versions before the registry, is recorded too when it exists, so moving straight from them
    to several partitions leaves nothing behind in it.
    """
    await redis.sadd(layout.registry, *layout.streams)
    if layout.tagged and await redis.exists(layout.stream):
        await redis.sadd(layout.registry, layout.stream)
    for stream in layout.streams:
        # Created at id 0 before the first event, so no event predates the worker's group.
        await ensure_consumer_group(redis, stream)


async def recorded_streams(redis: AsyncRedis, stream: str) -> list[str]:
    """Every stream recorded for the queue ``stream``, sorted (empty before any ingress ran)."""
    recorded = await redis.smembers(registry_key(stream))
    return sorted({name.decode() if isinstance(name, bytes) else str(name) for name in recorded})


async def registered_streams(redis: AsyncRedis, stream: str, *, current: list[str]) -> list[str]:
    """The ``current`` layout's streams, then every other one recorded for ``stream``."""
    others = [name for name in await recorded_streams(redis, stream) if name not in current]
    return [*current, *others]
