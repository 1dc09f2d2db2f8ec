"""Delayed retries held in Redis: a sorted set by due time, moved onto the stream when due.

A retry is not a sleeping coroutine holding a worker slot: it is a message in Redis, so it
survives a worker restart, and any worker moves it back (the move is one atomic script, so two
workers never move the same retry twice). Due times use Redis's clock, not the workers'.

A *deferral* (the event is not at fault: busy key, open breaker, store outage) is scheduled the
same way and also recorded in a second sorted set scored by the event's first attempt, in the
same script; the mover removes it from both. The oldest score there is the age of the oldest
event waiting on a deferral (a gauge, and an alert before ``DEFER_MAX_SECONDS`` expires it).
"""

from __future__ import annotations

from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from courier_gateway.queue.layout import QueueLayout
from courier_gateway.queue.messages import tenant_of
from courier_gateway.queue.topology import AsyncRedis, replicated

__all__ = ["PartitionedSchedule", "RetrySchedule", "deferrals_key", "retries_key"]

_SCHEDULE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if KEYS[2] then redis.call('ZADD', KEYS[2], tonumber(ARGV[3]), ARGV[1]) end
return now + tonumber(ARGV[2])
"""

_MOVE_DUE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, message in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'data', message)
  redis.call('ZREM', KEYS[1], message)
  redis.call('ZREM', KEYS[3], message)
end
return #due
"""

# The oldest deferral still waiting, in ms since its first attempt (-1: none). A member the
# schedule no longer holds (moved by a worker of an older version) is dropped on the way.
_OLDEST_DEFERRAL = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
for _ = 1, 100 do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if #oldest == 0 then return -1 end
  if redis.call('ZSCORE', KEYS[1], oldest[1]) then
    return math.max(0, now - tonumber(oldest[2]))
  end
  redis.call('ZREM', KEYS[2], oldest[1])
end
return -1
"""


def retries_key(stream: str) -> str:
    """The sorted set holding the retries of ``stream`` until they are due."""
    return f"{stream}:retries"


def deferrals_key(stream: str) -> str:
    """The sorted set of the deferred messages of ``stream``, scored by first attempt (ms)."""
    return f"{stream}:deferrals"


class RetrySchedule:
    """Schedule messages for later and move due ones onto the stream.

    With ``min_replicas``, a scheduling write returns only once that many replicas confirmed
    it (``WAIT``): the message it schedules is acknowledged on the stream right after, and the
    acknowledgement must not survive a failover that the retry did not.
    """

    def __init__(
        self, redis: AsyncRedis, stream: str, *, min_replicas: int = 0, wait_ms: int = 2000
    ) -> None:
        self._redis = redis
        self._stream = stream
        self._min_replicas = min_replicas
        self._wait_ms = wait_ms
        self.key = retries_key(stream)
        self.deferrals = deferrals_key(stream)
        self._schedule = redis.register_script(_SCHEDULE)
        self._move_due = redis.register_script(_MOVE_DUE)
        self._oldest_deferral = redis.register_script(_OLDEST_DEFERRAL)

    async def schedule(self, message: bytes, delay_seconds: float) -> None:
        """Hold ``message`` until ``delay_seconds`` from now (Redis time)."""
        await self._write([self.key], [message, _ms(delay_seconds)])

    async def defer(self, message: bytes, delay_seconds: float, *, first_attempt_ms: int) -> None:
        """Hold a deferred ``message`` like :meth:`schedule`, recording its first attempt."""
        await self._write(
            [self.key, self.deferrals], [message, _ms(delay_seconds), first_attempt_ms]
        )

    async def _write(self, keys: list[str], args: list[Any]) -> None:
        if not self._min_replicas:
            await self._schedule(keys=keys, args=args)
            return
        script: AsyncScript = self._schedule

        def commands(pipe: Any) -> None:
            pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)

        for attempt in (1, 2):
            try:
                await replicated(
                    self._redis,
                    [self.key],
                    commands,
                    replicas=self._min_replicas,
                    wait_ms=self._wait_ms,
                )
                return
            except NoScriptError:
                # A restarted or promoted primary lost its script cache; NOSCRIPT ran nothing.
                if attempt == 2:
                    raise
                await self._redis.script_load(script.script)

    async def move_due(self, limit: int = 500) -> int:
        """Move up to ``limit`` due messages onto the stream; return how many moved."""
        return int(
            await self._move_due(keys=[self.key, self._stream, self.deferrals], args=[limit])
        )

    async def pending(self) -> int:
        """How many retries are waiting."""
        return int(await self._redis.zcard(self.key))

    async def oldest_deferral_seconds(self) -> float:
        """Age (since its first attempt) of the oldest deferred event waiting; 0 when none."""
        age_ms = int(await self._oldest_deferral(keys=[self.key, self.deferrals]))
        return max(0, age_ms) / 1000


def _ms(seconds: float) -> int:
    return max(0, int(seconds * 1000))


class PartitionedSchedule:
    """The retry schedules of every partition: a retry waits in its event's partition.

    An event's retry is scheduled in the partition its (source, idempotency key) maps to, so
    it shares the slot (and, in a cluster, the node) of the stream it returns to. The worker's
    duties run over every stream it reads, earlier partition counts' included.
    """

    def __init__(
        self, redis: AsyncRedis, layout: QueueLayout, *, min_replicas: int = 0, wait_ms: int = 2000
    ) -> None:
        self._redis = redis
        self._layout = layout
        self._min_replicas = min_replicas
        self._wait_ms = wait_ms
        self._schedules: dict[str, RetrySchedule] = {}

    def of(self, stream: str) -> RetrySchedule:
        """The schedule that feeds ``stream``."""
        schedule = self._schedules.get(stream)
        if schedule is None:
            schedule = self._schedules[stream] = RetrySchedule(
                self._redis, stream, min_replicas=self._min_replicas, wait_ms=self._wait_ms
            )
        return schedule

    def for_event(self, envelope: dict[str, Any]) -> RetrySchedule:
        """The schedule of the partition ``envelope``'s event belongs to."""
        key = str(envelope["event"]["idempotencyKey"])
        return self.of(self._layout.partition_for(tenant_of(envelope), key).stream)

    async def move_due(self, streams: list[str], limit: int = 500) -> int:
        """Move due retries of every stream in ``streams``; return how many moved."""
        return sum([await self.of(stream).move_due(limit) for stream in streams])

    async def oldest_deferral_seconds(self, streams: list[str]) -> float:
        """The age of the oldest deferred event waiting in any of ``streams`` (0: none)."""
        return max([await self.of(stream).oldest_deferral_seconds() for stream in streams] or [0])
