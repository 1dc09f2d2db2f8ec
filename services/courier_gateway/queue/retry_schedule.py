"""Delayed retries held in Redis: a sorted set by due time, moved onto the stream when due.

A retry is not a sleeping coroutine holding a worker slot: it is a message in Redis, so it
survives a worker restart, and any worker moves it back (the move is one atomic script, so two
workers never move the same retry twice). Due times use Redis's clock, not the workers'.
"""

from __future__ import annotations

from redis.asyncio import Redis

__all__ = ["RetrySchedule", "retries_key"]

_SCHEDULE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return now + tonumber(ARGV[2])
"""

_MOVE_DUE = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, message in ipairs(due) do
  redis.call('XADD', KEYS[2], '*', 'data', message)
  redis.call('ZREM', KEYS[1], message)
end
return #due
"""


def retries_key(stream: str) -> str:
    """The sorted set holding the retries of ``stream`` until they are due."""
    return f"{stream}:retries"


class RetrySchedule:
    """Schedule messages for later and move due ones onto the stream."""

    def __init__(self, redis: Redis, stream: str) -> None:
        self._redis = redis
        self._stream = stream
        self.key = retries_key(stream)
        self._schedule = redis.register_script(_SCHEDULE)
        self._move_due = redis.register_script(_MOVE_DUE)

    async def schedule(self, message: bytes, delay_seconds: float) -> None:
        """Hold ``message`` until ``delay_seconds`` from now (Redis time)."""
        await self._schedule(keys=[self.key], args=[message, max(0, int(delay_seconds * 1000))])

    async def move_due(self, limit: int = 500) -> int:
        """Move up to ``limit`` due messages onto the stream; return how many moved."""
        return int(await self._move_due(keys=[self.key, self._stream], args=[limit]))

    async def pending(self) -> int:
        """How many retries are waiting."""
        return int(await self._redis.zcard(self.key))
