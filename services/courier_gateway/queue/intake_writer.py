"""The ingress's write path: rate limit, duplicate hint and ``XADD`` as one atomic Redis script.

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

__all__ = ["IntakeUnavailableError", "IntakeWriter", "WriteOutcome", "WriteRequest"]

# One call writes a whole batch. KEYS: the stream, then per event its rate-limit bucket and its
# duplicate-hint key. ARGV per event: message, rate per second (0: none), burst, hint TTL
# seconds (0: none). Returns, per event, a status and a value (entry id or seconds to wait).
_SCRIPT = """
local results = {}
local now = nil
for i = 0, (#ARGV / 4) - 1 do
  local bucket, hint = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  local message, rate = ARGV[1 + 4 * i], tonumber(ARGV[2 + 4 * i])
  local burst, ttl = tonumber(ARGV[3 + 4 * i]), tonumber(ARGV[4 + 4 * i])
  local status, value = nil, ''
  if rate > 0 then
    if now == nil then
      local clock = redis.call('TIME')
      now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
    end
    local state = redis.call('HMGET', bucket, 'tokens', 'at')
    local tokens = tonumber(state[1]) or burst
    local at = tonumber(state[2]) or now
    tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
    if tokens < 1 then
      status, value = 'limited', tostring((1 - tokens) / rate)
    else
      redis.call('HSET', bucket, 'tokens', tostring(tokens - 1), 'at', tostring(now))
      redis.call('PEXPIRE', bucket, math.ceil(burst / rate * 1000) + 1000)
    end
  end
  if status == nil and ttl > 0 and redis.call('EXISTS', hint) == 1 then
    status = 'duplicate'
  end
  if status == nil then
    value = redis.call('XADD', KEYS[1], '*', 'data', message)
    if ttl > 0 then
      redis.call('SET', hint, value, 'EX', ttl)
    end
    status = 'queued'
  end
  results[#results + 1] = status
  results[#results + 1] = value
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
class WriteOutcome:
    """What Redis decided: ``queued`` (with the stream entry id), ``duplicate`` or ``limited``."""

    status: Literal["queued", "duplicate", "limited"]
    entry_id: str | None = None
    retry_after: int = 0


class IntakeWriter:
    """Writes events with group commit; :meth:`write` returns once Redis acknowledged the event."""

    def __init__(self, redis: Redis, stream: str, *, timeout_seconds: float) -> None:
        self._redis = redis
        self._stream = stream
        self._timeout = timeout_seconds
        self._sha: str | None = None
        self._pending: list[tuple[WriteRequest, asyncio.Future[WriteOutcome]]] = []
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
        future: asyncio.Future[WriteOutcome] = asyncio.get_running_loop().create_future()
        self._pending.append((request, future))
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
                if isinstance(outcome, WriteOutcome):
                    future.set_result(outcome)
                else:
                    future.set_exception(
                        IntakeUnavailableError(f"Redis refused the write ({outcome})")
                    )

    async def _send(self, batch: list[WriteRequest]) -> list[WriteOutcome | Exception]:
        if self._sha is None:
            self._sha = str(await self._redis.script_load(_SCRIPT))
        chunks = [batch[i : i + _MAX_BATCH] for i in range(0, len(batch), _MAX_BATCH)]
        replies = await self._run(chunks)
        if any(isinstance(reply, NoScriptError) for reply in replies):
            # Redis restarted and lost its script cache; NOSCRIPT means nothing ran, so resend.
            self._sha = str(await self._redis.script_load(_SCRIPT))
            replies = await self._run(chunks)
        results: list[WriteOutcome | Exception] = []
        for chunk, reply in zip(chunks, replies, strict=True):
            if isinstance(reply, Exception):
                results.extend([reply] * len(chunk))
            else:
                results.extend(_outcome(reply[i], reply[i + 1]) for i in range(0, len(reply), 2))
        return results

    async def _run(self, chunks: list[list[WriteRequest]]) -> list[Any]:
        assert self._sha is not None
        async with self._redis.pipeline(transaction=False) as pipe:
            for chunk in chunks:
                keys: list[str] = [self._stream]
                args: list[bytes | float | int] = []
                for request in chunk:
                    keys += (request.rate_key, request.hint_key)
                    args += (request.message, request.per_second, request.burst, request.hint_ttl)
                pipe.evalsha(self._sha, len(keys), *keys, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


def _outcome(status_raw: bytes | str, value_raw: bytes | str) -> WriteOutcome:
    status = status_raw.decode() if isinstance(status_raw, bytes) else status_raw
    value = value_raw.decode() if isinstance(value_raw, bytes) else value_raw
    if status == "queued":
        return WriteOutcome("queued", entry_id=value)
    if status == "duplicate":
        return WriteOutcome("duplicate")
    return WriteOutcome("limited", retry_after=max(1, math.ceil(float(value))))
