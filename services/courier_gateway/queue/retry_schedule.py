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

from redis.asyncio import Redis

__all__ = ["RetrySchedule", "deferrals_key", "retries_key"]

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
    """Schedule messages for later and move due ones onto the stream."""

    def __init__(self, redis: Redis, stream: str) -> None:
        self._redis = redis
        self._stream = stream
        self.key = retries_key(stream)
        self.deferrals = deferrals_key(stream)
        self._schedule = redis.register_script(_SCHEDULE)
        self._move_due = redis.register_script(_MOVE_DUE)
        self._oldest_deferral = redis.register_script(_OLDEST_DEFERRAL)

    async def schedule(self, message: bytes, delay_seconds: float) -> None:
        """Hold ``message`` until ``delay_seconds`` from now (Redis time)."""
        await self._schedule(keys=[self.key], args=[message, _ms(delay_seconds)])

    async def defer(self, message: bytes, delay_seconds: float, *, first_attempt_ms: int) -> None:
        """Hold a deferred ``message`` like :meth:`schedule`, recording its first attempt."""
        await self._schedule(
            keys=[self.key, self.deferrals],
            args=[message, _ms(delay_seconds), first_attempt_ms],
        )

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
