"""The worker's stream broker: taskiq-redis's, with its message-losing defaults fixed.

Three gaps of ``RedisStreamBroker`` are closed here (see ``docs/architecture.md``):

- the consumer group is created at id ``0``, not ``$``, so events accepted before any worker
  ever ran are consumed (the ingress creates the group the same way when it starts);
- unacknowledged messages of a dead consumer are reclaimed on a timer, not only after a read
  that returned messages, so they are recovered with no new traffic; the reclaim lock has a
  timeout, and a consumer that cannot get it skips the round instead of blocking;
- ``XADD`` never trims (``maxlen`` can drop entries nobody processed); trimming is done by
  :mod:`courier_gateway.queue.maintenance`, never past an unacknowledged entry.

A fourth gap: taskiq-redis lets any Redis connection error end the listener, and with it the
worker. Here every Redis call of the broker goes through one
:class:`~courier_gateway.dependency.Dependency`: the read loop waits out an outage with capped,
jittered backoff and resumes (recreating the group if Redis came back without it), whatever
read it wraps; the worker's ``/ready`` follows the same state.

Acknowledgements of concurrent jobs go out as one ``XACK`` (group commit) on one client, where
taskiq-redis opens a client per acknowledgement. An acknowledgement that cannot reach Redis is
retried for up to the idle timeout; after that the message is simply redelivered, and the
ledger answers it as a duplicate.
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
from taskiq import AckableMessage, AsyncBroker
from taskiq_redis import RedisStreamBroker

from courier_gateway.config import Settings
from courier_gateway.dependency import REDIS_UNAVAILABLE, Dependency
from courier_gateway.group_commit import GroupCommit

__all__ = [
    "CONSUMER_GROUP",
    "HEALTH_CHECK_SECONDS",
    "CourierStreamBroker",
    "ensure_consumer_group",
    "is_missing_group",
    "make_broker",
]

log = logging.getLogger(__name__)

CONSUMER_GROUP = "courier-workers"
HEALTH_CHECK_SECONDS = 5


async def ensure_consumer_group(redis: Redis, stream: str) -> None:
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


class StreamAcks(GroupCommit[tuple[str, str], None]):
    """``XACK`` of concurrent jobs' entries, one command per stream and batch."""

    def __init__(self, redis: Redis, link: Dependency, *, patience: float) -> None:
        super().__init__(max_batch=500)
        self._redis = redis
        self._link = link
        self._patience = patience

    async def write(self, batch: list[tuple[tuple[str, str], asyncio.Future[None]]]) -> None:
        """Acknowledge every entry of the batch, grouped by stream, waiting out an outage."""
        streams: dict[str, list[str]] = {}
        for (stream, entry_id), _ in batch:
            streams.setdefault(stream, []).append(entry_id)
        for stream, ids in streams.items():

            async def xack(stream: str = stream, ids: list[str] = ids) -> None:
                await self._redis.xack(stream, CONSUMER_GROUP, *ids)

            await self._link.call(xack, patience=self._patience)
        for _, future in batch:
            if not future.done():
                future.set_result(None)


class CourierStreamBroker(RedisStreamBroker):
    """A taskiq-redis stream broker that reclaims on a timer, never trims on write, and waits
    out Redis outages."""

    def __init__(
        self,
        url: str,
        *,
        stream: str,
        idle_timeout_ms: int,
        batch: int,
        link: Dependency | None = None,
        **kwargs: Any,
    ) -> None:
        self.reclaim_interval = min(max(idle_timeout_ms / 4000, 0.2), 10.0)
        self.link = link or Dependency("redis", REDIS_UNAVAILABLE)
        #: ``time.monotonic()`` of the last read attempt: the worker's liveness looks at it.
        self.last_poll = time.monotonic()
        self._last_reclaim = 0.0
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

    async def startup(self) -> None:
        """Start without requiring Redis: the group is created now if Redis answers, else by
        the read loop once it does (a worker started during an outage waits, not-ready)."""
        await AsyncBroker.startup(self)
        redis = Redis(connection_pool=self.connection_pool)
        try:
            await ensure_consumer_group(redis, self.queue_name)
        except REDIS_UNAVAILABLE as error:
            self.link.failed(error)
        finally:
            await redis.aclose()

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        """Yield new messages, and every ``reclaim_interval`` the ones idle past the timeout.

        Each round trip goes through the Redis dependency, so a Redis outage pauses the loop
        (with backoff) instead of ending it.
        """
        redis = Redis(connection_pool=self.connection_pool)
        try:
            while True:
                for entry_id, fields in await self.link.call(lambda: self._read(redis)):
                    yield self._message(entry_id, fields)
                if time.monotonic() - self._last_reclaim >= self.reclaim_interval:
                    self._last_reclaim = time.monotonic()
                    for entry_id, fields in await self.link.call(lambda: self._reclaim(redis)):
                        yield self._message(entry_id, fields)
        finally:
            await redis.aclose()

    async def _read(self, redis: Redis) -> list[tuple[bytes, dict[bytes, bytes]]]:
        self.last_poll = time.monotonic()
        try:
            fetched = await redis.xreadgroup(
                self.consumer_group_name,
                self.consumer_name,
                {self.queue_name: ">"},
                block=self.block,
                count=self.count,
            )
        except ResponseError as error:
            if not is_missing_group(error):
                raise
            # Redis lost the group (restarted without persistence): recreate it at 0.
            log.warning("consumer group missing; recreating it")
            await ensure_consumer_group(redis, self.queue_name)
            return []
        batches: Any = fetched or []
        return [(entry_id, fields) for _, entries in batches for entry_id, fields in entries]

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
            acks = self._acks = StreamAcks(
                Redis(connection_pool=self.connection_pool),
                self.link,
                patience=self.idle_timeout / 1000,
            )

        async def _ack() -> None:
            try:
                await acks.submit((queue_name, id))
            except REDIS_UNAVAILABLE:
                # The outcome is stored; after the idle timeout another worker (or this one)
                # reclaims the message and the ledger answers it as a duplicate.
                log.warning(
                    "could not acknowledge; the message will be redelivered and answered from"
                    " the ledger",
                    extra={"entryId": id},
                )

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
        except ResponseError as error:
            if not is_missing_group(error):
                raise
            return []  # the next read recreates the group
        finally:
            try:
                await lock.release()
            except Exception:  # an expired lock is harmless here
                log.debug("reclaim lock already expired")
        claimed = [(entry_id, fields) for entry_id, fields in result[1] if fields]
        if claimed:
            log.info("reclaimed unacknowledged messages", extra={"count": len(claimed)})
        return claimed


def make_broker(settings: Settings, link: Dependency | None = None) -> CourierStreamBroker:
    """The worker's broker, configured from the settings (``link``: the Redis dependency)."""
    settings.require("REDIS_URL")
    assert settings.redis_url is not None
    return CourierStreamBroker(
        settings.redis_url,
        stream=settings.queue_stream,
        idle_timeout_ms=settings.worker_idle_timeout_ms,
        batch=settings.worker_concurrency,
        link=link,
        max_connection_pool_size=settings.worker_concurrency + 10,
        socket_timeout=max(5.0, settings.worker_idle_timeout_ms / 1000),
        socket_connect_timeout=5.0,
        # A pooled connection idle this long is PINGed before use: after a Redis restart the
        # stale ones are replaced quietly instead of failing one command each.
        health_check_interval=HEALTH_CHECK_SECONDS,
    )
