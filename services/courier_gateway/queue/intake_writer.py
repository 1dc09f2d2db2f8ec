"""The ingress's write path: rate limit, duplicate hints and ``XADD`` as one atomic Redis script.

Why a script: the three decisions must agree. The duplicate hint is set in the same atomic step
as the ``XADD``, so ``duplicate: true`` is only ever answered for a copy that really is on the
stream (DESIGN §3), and the rate limit counts only authentic requests (the script runs after the
signature check) and holds across every ingress process because the bucket lives in Redis.

Why group commit: each request awaits its own write, but the events of concurrent requests
travel in one script call: one round trip, and one command to encode and parse, per batch. A
single flusher per process sends the next batch as soon as the previous one is answered, so
batching adds no timer delay at low load.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

__all__ = ["BatchWrite", "IntakeUnavailableError", "IntakeWriter", "WriteOutcome", "WriteRequest"]

# One call writes a whole batch of requests. KEYS: the stream, then per request its rate-limit
# bucket and one duplicate-hint key per event. ARGV per request: the number of events n, rate per
# second (0: none), burst, hint TTL seconds (0: none), then the n messages. A request's events
# are decided together: the bucket gives min(n, burst) tokens or the request is limited (value:
# seconds to wait); otherwise each event is queued (value: entry id) or a duplicate. One script
# call runs atomically, and Redis refuses a script for memory before its first write, never
# between two, so a request's events are all on the stream or none is.
_SCRIPT = """
local results = {}
local now = nil
local k, a = 2, 1
while a <= #ARGV do
  local count, rate = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  local burst, ttl = tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])
  local bucket = KEYS[k]
  local limited = nil
  if rate > 0 then
    if now == nil then
      local clock = redis.call('TIME')
      now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
    end
    local need = math.max(1, math.min(count, burst))
    local state = redis.call('HMGET', bucket, 'tokens', 'at')
    local tokens = tonumber(state[1]) or burst
    local at = tonumber(state[2]) or now
    tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
    if tokens < need then
      limited = tostring((need - tokens) / rate)
    else
      redis.call('HSET', bucket, 'tokens', tostring(tokens - need), 'at', tostring(now))
      redis.call('PEXPIRE', bucket, math.ceil(burst / rate * 1000) + 1000)
    end
  end
  for j = 1, count do
    local hint, message = KEYS[k + j], ARGV[a + 3 + j]
    local status, value = nil, ''
    if limited ~= nil then
      status, value = 'limited', limited
    elseif ttl > 0 and redis.call('EXISTS', hint) == 1 then
      status = 'duplicate'
    else
      value = redis.call('XADD', KEYS[1], '*', 'data', message)
      if ttl > 0 then
        redis.call('SET', hint, value, 'EX', ttl)
      end
      status = 'queued'
    end
    results[#results + 1] = status
    results[#results + 1] = value
  end
  k, a = k + 1 + count, a + 4 + count
end
return results
"""
_MAX_BATCH = 256


class IntakeUnavailableError(Exception):
    """Redis did not acknowledge the write in time (or refused it): the event is not accepted."""


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """One event to write, with the keys and limits that apply to it."""

    message: bytes
    rate_key: str
    per_second: float
    burst: int
    hint_key: str
    hint_ttl: int


@dataclass(frozen=True, slots=True)
class BatchWrite:
    """The events of one request: written together (all or none), rate-limited together."""

    messages: tuple[bytes, ...]
    hint_keys: tuple[str, ...]
    rate_key: str
    per_second: float
    burst: int
    hint_ttl: int

    @classmethod
    def single(cls, request: WriteRequest) -> BatchWrite:
        """The batch of one event."""
        return cls(
            (request.message,),
            (request.hint_key,),
            request.rate_key,
            request.per_second,
            request.burst,
            request.hint_ttl,
        )


@dataclass(frozen=True, slots=True)
class WriteOutcome:
    """What Redis decided: ``queued`` (with the stream entry id), ``duplicate`` or ``limited``."""

    status: Literal["queued", "duplicate", "limited"]
    entry_id: str | None = None
    retry_after: int = 0


class IntakeWriter:
    """Writes events with group commit; a write returns once Redis acknowledged its events."""

    def __init__(self, redis: Redis, stream: str, *, timeout_seconds: float) -> None:
        self._redis = redis
        self._stream = stream
        self._timeout = timeout_seconds
        self._sha: str | None = None
        self._pending: list[tuple[BatchWrite, asyncio.Future[list[WriteOutcome]]]] = []
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the flusher task on the running loop."""
        self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def close(self) -> None:
        """Stop the flusher; writes still waiting fail as unavailable."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        for _, future in self._pending:
            if not future.done():
                future.set_exception(IntakeUnavailableError("the ingress is stopping"))
        self._pending.clear()

    async def write(self, request: WriteRequest) -> WriteOutcome:
        """Write one event; raise :class:`IntakeUnavailableError` after the enqueue timeout."""
        (outcome,) = await self.write_batch(BatchWrite.single(request))
        return outcome

    async def write_batch(self, batch: BatchWrite) -> list[WriteOutcome]:
        """Write a request's events together: one outcome each, all ``limited`` or none.

        Raise :class:`IntakeUnavailableError` after the enqueue timeout; then none of them is
        acknowledged, and a write Redis did not acknowledge may or may not have happened (a
        re-sent copy is absorbed by the duplicate hint and the ledger).
        """
        future: asyncio.Future[list[WriteOutcome]] = asyncio.get_running_loop().create_future()
        self._pending.append((batch, future))
        self._wakeup.set()
        try:
            async with asyncio.timeout(self._timeout):
                return await future
        except TimeoutError:
            raise IntakeUnavailableError(
                f"Redis did not acknowledge the write within {int(self._timeout * 1000)} ms"
            ) from None

    async def _flush_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch = [(request, future) for request, future in self._pending if not future.done()]
            self._pending = []
            if not batch:
                continue
            try:
                outcomes = await self._send([request for request, _ in batch])
            except (RedisError, OSError, TimeoutError) as error:
                failure = IntakeUnavailableError(f"Redis is unavailable ({type(error).__name__})")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(failure)
                continue
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, list):
                    future.set_result(outcome)
                else:
                    future.set_exception(
                        IntakeUnavailableError(f"Redis refused the write ({outcome})")
                    )

    async def _send(self, batch: list[BatchWrite]) -> list[list[WriteOutcome] | Exception]:
        if self._sha is None:
            self._sha = str(await self._redis.script_load(_SCRIPT))
        chunks = _chunks(batch)
        replies = await self._run(chunks)
        if any(isinstance(reply, NoScriptError) for reply in replies):
            # Redis restarted and lost its script cache; NOSCRIPT means nothing ran, so resend.
            self._sha = str(await self._redis.script_load(_SCRIPT))
            replies = await self._run(chunks)
        results: list[list[WriteOutcome] | Exception] = []
        for chunk, reply in zip(chunks, replies, strict=True):
            if isinstance(reply, Exception):
                results.extend([reply] * len(chunk))
                continue
            outcomes = [_outcome(reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]
            position = 0
            for request in chunk:
                count = len(request.messages)
                results.append(outcomes[position : position + count])
                position += count
        return results

    async def _run(self, chunks: list[list[BatchWrite]]) -> list[Any]:
        assert self._sha is not None
        async with self._redis.pipeline(transaction=False) as pipe:
            for chunk in chunks:
                keys: list[str] = [self._stream]
                args: list[bytes | float | int] = []
                for request in chunk:
                    keys.append(request.rate_key)
                    keys += request.hint_keys
                    args += (len(request.messages), request.per_second, request.burst)
                    args.append(request.hint_ttl)
                    args += request.messages
                pipe.evalsha(self._sha, len(keys), *keys, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


def _chunks(batch: list[BatchWrite]) -> list[list[BatchWrite]]:
    """Script calls of at most _MAX_BATCH events, never splitting one request's events."""
    chunks: list[list[BatchWrite]] = []
    size = 0
    for request in batch:
        if not chunks or size + len(request.messages) > _MAX_BATCH:
            chunks.append([])
            size = 0
        chunks[-1].append(request)
        size += len(request.messages)
    return chunks


def _outcome(status_raw: bytes | str, value_raw: bytes | str) -> WriteOutcome:
    status = status_raw.decode() if isinstance(status_raw, bytes) else status_raw
    value = value_raw.decode() if isinstance(value_raw, bytes) else value_raw
    if status == "queued":
        return WriteOutcome("queued", entry_id=value)
    if status == "duplicate":
        return WriteOutcome("duplicate")
    return WriteOutcome("limited", retry_after=max(1, math.ceil(float(value))))
