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

Partitions: the broker reads every partition stream of the queue (the current layout's and any
an earlier partition count left in the registry), one reader per stream, each blocking on its
own stream (a cluster cannot read streams of different slots in one call). The readers hand
messages to the receiver through one small queue whose waiting readers are served in turn, so
a busy partition cannot starve a quiet one, and each reader reclaims its own stream.

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

from redis.exceptions import ResponseError
from taskiq import AckableMessage, AsyncBroker, BrokerMessage
from taskiq_redis import RedisStreamBroker

from courier_gateway.config import Settings
from courier_gateway.dependency import REDIS_UNAVAILABLE, Dependency
from courier_gateway.group_commit import GroupCommit
from courier_gateway.queue.layout import QueueLayout
from courier_gateway.queue.registry import (
    CONSUMER_GROUP,
    ensure_consumer_group,
    is_missing_group,
    prepare_partitions,
    registered_streams,
)
from courier_gateway.queue.topology import AsyncRedis, connect

__all__ = [
    "CONSUMER_GROUP",
    "HEALTH_CHECK_SECONDS",
    "CourierStreamBroker",
    "ensure_consumer_group",
    "is_missing_group",
    "make_broker",
]

log = logging.getLogger(__name__)

HEALTH_CHECK_SECONDS = 5
#: How often the readers' set is compared with the partition registry.
REGISTRY_REFRESH_SECONDS = 10.0


class StreamAcks(GroupCommit[tuple[str, str], None]):
    """``XACK`` of concurrent jobs' entries, one command per stream and batch."""

    def __init__(self, redis: AsyncRedis, link: Dependency, *, patience: float) -> None:
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
    """A taskiq-redis stream broker that reads every partition fairly, reclaims on a timer,
    never trims on write, and waits out Redis outages."""

    def __init__(
        self,
        redis: AsyncRedis,
        layout: QueueLayout,
        *,
        idle_timeout_ms: int,
        batch: int,
        link: Dependency | None = None,
    ) -> None:
        self.reclaim_interval = min(max(idle_timeout_ms / 4000, 0.2), 10.0)
        self.link = link or Dependency("redis", REDIS_UNAVAILABLE)
        self.redis = redis
        self.layout = layout
        #: The streams read now: the layout's, then any other partition in the registry.
        self.streams: list[str] = list(layout.streams)
        #: ``time.monotonic()`` of the last read attempt: the worker's liveness looks at it.
        self.last_poll = time.monotonic()
        self._acks: StreamAcks | None = None
        # taskiq-redis's own connection pool is never used: every command goes through
        # ``redis`` (standalone, Sentinel or Cluster); the URL only satisfies its constructor.
        super().__init__(
            "redis://127.0.0.1:6379/0",
            queue_name=layout.stream,
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
        )

    async def startup(self) -> None:
        """Start without requiring Redis: the groups are created now if Redis answers, else by
        the readers once it does (a worker started during an outage waits, not-ready)."""
        await AsyncBroker.startup(self)
        try:
            # The worker records its layout too: its retries go to these streams, whichever
            # of the ingress and the worker is rolled to a new partition count first.
            await prepare_partitions(self.redis, self.layout)
            await self.refresh_streams()
            for stream in self.streams[len(self.layout.streams) :]:  # earlier partitions
                await ensure_consumer_group(self.redis, stream)
        except REDIS_UNAVAILABLE as error:
            self.link.failed(error)

    async def shutdown(self) -> None:
        """Close the client shared by the readers and the acknowledgements."""
        await AsyncBroker.shutdown(self)
        await self.redis.aclose()

    async def kick(self, message: BrokerMessage) -> None:
        """Not how events enter the queue: the ingress writes them (``IntakeWriter``)."""
        raise TypeError("events are queued by the ingress's IntakeWriter, not by the broker")

    async def refresh_streams(self) -> list[str]:
        """Read the registry: the current layout's streams, then every earlier partition."""
        self.streams = await registered_streams(
            self.redis, self.layout.stream, current=self.layout.streams
        )
        return self.streams

    async def listen(self) -> AsyncGenerator[AckableMessage, None]:
        """Yield messages from every partition: one reader per stream, served in turn.

        Each reader's round trips go through the Redis dependency, so an outage pauses the
        readers (with backoff) instead of ending them.
        """
        handoff: asyncio.Queue[AckableMessage] = asyncio.Queue(maxsize=max(1, self.count or 1))
        readers: dict[str, asyncio.Task[None]] = {}

        def start_missing() -> None:
            for stream in self.streams:
                if stream not in readers:
                    readers[stream] = asyncio.create_task(
                        self._read_forever(stream, handoff), name=f"reader {stream}"
                    )

        start_missing()
        refreshed = time.monotonic()
        try:
            while True:
                try:
                    async with asyncio.timeout(1.0):
                        message = await handoff.get()
                except TimeoutError:
                    message = None
                if message is not None:
                    yield message
                if time.monotonic() - refreshed >= REGISTRY_REFRESH_SECONDS:
                    refreshed = time.monotonic()
                    try:
                        await self.refresh_streams()
                    except REDIS_UNAVAILABLE as error:
                        self.link.failed(error)
                    start_missing()
                for stream, reader in list(readers.items()):
                    if reader.done() and not reader.cancelled() and reader.exception():
                        # Not an outage (those are waited out): report it, start it again.
                        log.error(
                            "stream reader failed; restarting it",
                            exc_info=reader.exception(),
                            extra={"stream": stream},
                        )
                        del readers[stream]
                        start_missing()
        finally:
            for reader in readers.values():
                reader.cancel()
            await asyncio.gather(*readers.values(), return_exceptions=True)

    async def _read_forever(self, stream: str, handoff: asyncio.Queue[AckableMessage]) -> None:
        last_reclaim = 0.0
        while True:
            for entry_id, fields in await self.link.call(lambda: self._read(stream)):
                await handoff.put(self._message(stream, entry_id, fields))
            if time.monotonic() - last_reclaim >= self.reclaim_interval:
                last_reclaim = time.monotonic()
                for entry_id, fields in await self.link.call(lambda: self._reclaim(stream)):
                    await handoff.put(self._message(stream, entry_id, fields))

    async def _read(self, stream: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        self.last_poll = time.monotonic()
        try:
            fetched = await self.redis.xreadgroup(
                self.consumer_group_name,
                self.consumer_name,
                {stream: ">"},
                block=self.block,
                # The readers share one batch: a message read waits in this worker with its
                # idle time running, so the worker holds about a batch ahead, not one per stream.
                count=max(1, -(-(self.count or 1) // max(1, len(self.streams)))),
            )
        except ResponseError as error:
            if not is_missing_group(error):
                raise
            # Redis lost the group (restarted without persistence): recreate it at 0.
            log.warning("consumer group missing; recreating it", extra={"stream": stream})
            await ensure_consumer_group(self.redis, stream)
            return []
        batches: Any = fetched or []
        return [(entry_id, fields) for _, entries in batches for entry_id, fields in entries]

    def _message(self, stream: str, entry_id: bytes, fields: dict[bytes, bytes]) -> AckableMessage:
        return AckableMessage(
            data=fields[b"data"],
            ack=self._ack_generator(id=entry_id.decode(), queue_name=stream),
        )

    def _ack_generator(self, id: str, queue_name: str) -> Callable[[], Awaitable[None]]:
        # taskiq-redis opens a client per acknowledgement; concurrent jobs' acknowledgements go
        # out as one XACK per stream instead, each job still waiting for its own.
        acks = self._acks
        if acks is None:
            acks = self._acks = StreamAcks(self.redis, self.link, patience=self.idle_timeout / 1000)

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

    async def _reclaim(self, stream: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
        lock = self.redis.lock(
            f"cg:reclaim-lock:{self.consumer_group_name}:{stream}",
            timeout=self.unacknowledged_lock_timeout,
            blocking=False,
        )
        if not await lock.acquire():
            return []
        try:
            result = await self.redis.xautoclaim(
                stream,
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
            log.info(
                "reclaimed unacknowledged messages",
                extra={"count": len(claimed), "stream": stream},
            )
        return claimed


def make_broker(settings: Settings, link: Dependency | None = None) -> CourierStreamBroker:
    """The worker's broker, configured from the settings (``link``: the Redis dependency)."""
    layout = QueueLayout.from_settings(settings)
    redis = connect(
        settings,
        timeout=max(5.0, settings.worker_idle_timeout_ms / 1000),
        # A pooled connection idle this long is PINGed before use: after a Redis restart the
        # stale ones are replaced quietly instead of failing one command each.
        health_check_interval=HEALTH_CHECK_SECONDS,
    )
    return CourierStreamBroker(
        redis,
        layout,
        idle_timeout_ms=settings.worker_idle_timeout_ms,
        batch=settings.worker_concurrency,
        link=link,
    )
