"""The worker's stream broker: taskiq-redis's, with its message-losing defaults fixed.

Three gaps of ``RedisStreamBroker`` are closed here (see ``docs/architecture.md``):

- the consumer group is created at id ``0``, not ``$``, so events accepted before any worker
  ever ran are consumed (the ingress creates the group the same way when it starts);
- unacknowledged messages of a dead consumer are reclaimed on a timer, not only after a read
  that returned messages, so they are recovered with no new traffic; the reclaim lock has a
  timeout, and a consumer that cannot get it skips the round instead of blocking;
- ``XADD`` never trims (``maxlen`` can drop entries nobody processed); trimming is done by
  :mod:`courier_gateway.queue.maintenance`, never past an unacknowledged entry.

Acknowledgements of concurrent jobs go out as one ``XACK`` (group commit) on one client, where
taskiq-redis opens a client per acknowledgement.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError
from taskiq import AckableMessage
from taskiq_redis import RedisStreamBroker

from courier_gateway.config import Settings
from courier_gateway.group_commit import GroupCommit

__all__ = ["CONSUMER_GROUP", "CourierStreamBroker", "ensure_consumer_group", "make_broker"]

log = logging.getLogger(__name__)

CONSUMER_GROUP = "courier-workers"


async def ensure_consumer_group(redis: Redis, stream: str) -> None:
    """Create the stream and its consumer group at id 0 (no-op when they exist)."""
    try:
        await redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
    except ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


class StreamAcks(GroupCommit[tuple[str, str], None]):
    """``XACK`` of concurrent jobs' entries, one command per stream and batch."""

    def __init__(self, redis: Redis) -> None:
        super().__init__(max_batch=500)
        self._redis = redis

    async def write(self, batch: list[tuple[tuple[str, str], asyncio.Future[None]]]) -> None:
        """Acknowledge every entry of the batch, grouped by stream."""
        streams: dict[str, list[str]] = {}
        for (stream, entry_id), _ in batch:
            streams.setdefault(stream, []).append(entry_id)
        for stream, ids in streams.items():
            await self._redis.xack(stream, CONSUMER_GROUP, *ids)
        for _, future in batch:
            if not future.done():
                future.set_result(None)


class CourierStreamBroker(RedisStreamBroker):
    """A taskiq-redis stream broker that reclaims on a timer and never trims on write."""

    def __init__(
        self, url: str, *, stream: str, idle_timeout_ms: int, batch: int, **kwargs: Any
    ) -> None:
        self.reclaim_interval = min(max(idle_timeout_ms / 4000, 0.2), 10.0)
        self._acks: StreamAcks | None = None
        super().__init__(
            url,
            queue_name=stream,
            consumer_group_name=CONSUMER_GROUP,
            consumer_name=f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}",
            consumer_id="0",
            mkstream=True,
            xread_block=int(min(1000, self.reclaim_interval * 1000)),
            maxlen=None,
            idle_timeout=idle_timeout_ms,
            unacknowledged_batch_size=batch,
            unacknowledged_lock_timeout=max(1.0, self.reclaim_interval * 2),
            xread_count=batch,
            **kwargs,
        )

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        """Yield new messages, and every ``reclaim_interval`` the ones idle past the timeout."""
        async with Redis(connection_pool=self.connection_pool) as redis:
            last_reclaim = 0.0
            while True:
                try:
                    fetched = await redis.xreadgroup(
                        self.consumer_group_name,
                        self.consumer_name,
                        {self.queue_name: ">"},
                        block=self.block,
                        count=self.count,
                    )
                except ResponseError as error:
                    if "NOGROUP" not in str(error):
                        raise
                    # Redis lost the group (restart without persistence): recreate it at 0.
                    log.warning("consumer group missing; recreating it")
                    await ensure_consumer_group(redis, self.queue_name)
                    continue
                batches: Any = fetched or []
                for _, entries in batches:
                    for entry_id, fields in entries:
                        yield self._message(entry_id, fields)
                if time.monotonic() - last_reclaim >= self.reclaim_interval:
                    last_reclaim = time.monotonic()
                    for entry_id, fields in await self._reclaim(redis):
                        yield self._message(entry_id, fields)

    def _message(self, entry_id: bytes, fields: dict[bytes, bytes]) -> AckableMessage:
        return AckableMessage(
            data=fields[b"data"],
            ack=self._ack_generator(id=entry_id.decode(), queue_name=self.queue_name),
        )

    def _ack_generator(self, id: str, queue_name: str) -> Callable[[], Awaitable[None]]:
        # taskiq-redis opens a client per acknowledgement; concurrent jobs' acknowledgements go
        # out as one XACK instead, each job still waiting for its own.
        acks = self._acks
        if acks is None:
            acks = self._acks = StreamAcks(Redis(connection_pool=self.connection_pool))

        async def _ack() -> None:
            await acks.submit((queue_name, id))

        return _ack

    async def _reclaim(self, redis: Redis) -> list[tuple[bytes, dict[bytes, bytes]]]:
        lock = redis.lock(
            f"cg:reclaim-lock:{self.consumer_group_name}:{self.queue_name}",
            timeout=self.unacknowledged_lock_timeout,
            blocking=False,
        )
        if not await lock.acquire():
            return []
        try:
            result = await redis.xautoclaim(
                self.queue_name,
                self.consumer_group_name,
                self.consumer_name,
                min_idle_time=self.idle_timeout,
                start_id="0-0",
                count=self.unacknowledged_batch_size,
            )
        finally:
            try:
                await lock.release()
            except Exception:  # an expired lock is harmless here
                log.debug("reclaim lock already expired")
        claimed = [(entry_id, fields) for entry_id, fields in result[1] if fields]
        if claimed:
            log.info("reclaimed unacknowledged messages", extra={"count": len(claimed)})
        return claimed


def make_broker(settings: Settings) -> CourierStreamBroker:
    """The worker's broker, configured from the settings."""
    settings.require("REDIS_URL")
    assert settings.redis_url is not None
    return CourierStreamBroker(
        settings.redis_url,
        stream=settings.queue_stream,
        idle_timeout_ms=settings.worker_idle_timeout_ms,
        batch=settings.worker_concurrency,
        max_connection_pool_size=settings.worker_concurrency + 10,
        socket_timeout=max(5.0, settings.worker_idle_timeout_ms / 1000),
        socket_connect_timeout=5.0,
    )
