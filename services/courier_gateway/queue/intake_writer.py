"""The ingress's write path: rate limit, duplicate hints and ``XADD`` as one atomic Redis script.

Why a script: the three decisions must agree. The duplicate hint is set in the same atomic step
as the ``XADD``, so ``duplicate: true`` is only ever answered for a copy that really is on the
stream (DESIGN §3), and the rate limit counts only authentic requests (the script runs after the
signature check) and holds across every ingress process because the bucket lives in Redis.

Why group commit: each request awaits its own write, but the events of concurrent requests
travel in one script call: one round trip, and one command to encode and parse, per batch. A
single flusher per process sends the next batch as soon as the previous one is answered, so
batching adds no timer delay at low load.

Partitions (:mod:`~courier_gateway.queue.layout`): each event goes to the partition of its
(source, idempotency key), one script call per partition, all in one pipeline. A script can
only touch one slot of a cluster, so there the rate limit is decided first, by one call on the
buckets' shared slot, and the partitions' calls follow for the requests it let through: two
round trips instead of one. A request whose events span partitions is then all-or-none per
partition: on a 503 some of its events may be queued, and the re-sent request finds them
through their duplicate hints.

``ENQUEUE_MIN_REPLICAS``: a ``WAIT`` follows each node's writes on the same connection, and an
event is acknowledged only when that many replicas confirmed them; otherwise the request is
answered 503 (the write may survive; a re-sent copy is absorbed by the hint and the ledger).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from courier_gateway.queue.layout import Partition, QueueLayout
from courier_gateway.queue.topology import (
    AsyncRedis,
    ReplicationTimeoutError,
    replicated,
    writer_node,
)

__all__ = ["BatchWrite", "IntakeUnavailableError", "IntakeWriter", "WriteOutcome", "WriteRequest"]

# The token bucket both scripts use: take min(count, burst) tokens (at least one) from
# ``bucket`` at ``rate`` per second, or return the seconds to wait (as text) and take nothing.
_BUCKET_LUA = """
local function take(bucket, count, rate, burst, now)
  local need = math.max(1, math.min(count, burst))
  local state = redis.call('HMGET', bucket, 'tokens', 'at')
  local tokens = tonumber(state[1]) or burst
  local at = tonumber(state[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
  if tokens < need then
    return tostring((need - tokens) / rate)
  end
  redis.call('HSET', bucket, 'tokens', tostring(tokens - need), 'at', tostring(now))
  redis.call('PEXPIRE', bucket, math.ceil(burst / rate * 1000) + 1000)
  return nil
end
"""

# One call writes a batch of requests to one partition. ARGV[1]: '1' when a duplicate must write
# (touch its hint), so that the WAIT after it covers the original's XADD too: WAIT counts only
# this connection's writes, and replication is in order. KEYS: the stream, then per request its
# rate-limit bucket (the stream itself, untouched, when the limit was decided apart) and one
# duplicate-hint key per event. ARGV per request: the number of events n, rate per
# second (0: none), burst, hint TTL seconds (0: none), then the n messages. A request's events
# are decided together: the bucket gives min(n, burst) tokens or the request is limited (value:
# seconds to wait); otherwise each event is queued (value: entry id) or a duplicate. One script
# call runs atomically, and Redis refuses a script for memory before its first write, never
# between two, so a request's events are all on the stream or none is.
_SCRIPT = (
    _BUCKET_LUA
    + """
local results = {}
local now = nil
local touch = ARGV[1] == '1'
local k, a = 2, 2
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
    limited = take(bucket, count, rate, burst, now)
  end
  for j = 1, count do
    local hint, message = KEYS[k + j], ARGV[a + 3 + j]
    local status, value = nil, ''
    if limited ~= nil then
      status, value = 'limited', limited
    elseif ttl > 0 and redis.call('EXISTS', hint) == 1 then
      status = 'duplicate'
      if touch then
        redis.call('PEXPIRE', hint, ttl * 1000)
      end
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
)

# The rate limits of a batch of requests, decided apart from the writes (partitioned layouts).
# KEYS: one bucket per request; ARGV per request: events, rate per second, burst. The same token
# bucket as above; the reply per request: '' (admitted) or the seconds to wait.
_RATE_SCRIPT = (
    _BUCKET_LUA
    + """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local results = {}
for i = 1, #KEYS do
  local count, rate = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1])
  local burst = tonumber(ARGV[3 * i])
  results[i] = take(KEYS[i], count, rate, burst, now) or ''
end
return results
"""
)
log = logging.getLogger(__name__)

_MAX_BATCH = 256
#: How long a batch in flight holds the next one back before it is sent alongside (seconds).
_STALL_SECONDS = 0.02
#: Batches in flight at most (each holds a connection per node while it waits).
_MAX_IN_FLIGHT = 64


class IntakeUnavailableError(Exception):
    """Redis did not acknowledge the write in time (or refused it): the event is not accepted."""


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """One event to write: its message, who sent it, its idempotency key and its limits."""

    message: bytes
    tenant: str
    idempotency_key: str
    per_second: float
    burst: int
    hint_ttl: int


@dataclass(frozen=True, slots=True)
class BatchWrite:
    """The events of one request: written together (all or none per partition), rate-limited
    together."""

    messages: tuple[bytes, ...]
    idempotency_keys: tuple[str, ...]
    tenant: str
    per_second: float
    burst: int
    hint_ttl: int

    @classmethod
    def single(cls, request: WriteRequest) -> BatchWrite:
        """The batch of one event."""
        return cls(
            (request.message,),
            (request.idempotency_key,),
            request.tenant,
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


@dataclass(slots=True)
class _Segment:
    """The events of one request that go to one partition (positions in the request)."""

    request: int
    positions: list[int]
    messages: list[bytes]
    hint_keys: list[str]
    hint_ttl: int
    rate_key: str
    per_second: float
    burst: int


@dataclass(slots=True)
class _Call:
    """One script call: segments of one partition, at most _MAX_BATCH events."""

    partition: Partition
    segments: list[_Segment] = field(default_factory=list)
    events: int = 0


class IntakeWriter:
    """Writes events with group commit; a write returns once Redis acknowledged its events."""

    def __init__(
        self,
        redis: AsyncRedis,
        layout: QueueLayout,
        *,
        timeout_seconds: float,
        min_replicas: int = 0,
    ) -> None:
        self._redis = redis
        self._layout = layout
        self._timeout = timeout_seconds
        self._min_replicas = min_replicas
        # WAIT gives up a little before the request's own deadline, so its answer still counts.
        self._wait_ms = max(1, int(timeout_seconds * 800))
        self._sha: str | None = None
        self._rate_sha: str | None = None
        self._pending: list[tuple[BatchWrite, asyncio.Future[list[WriteOutcome]]]] = []
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Start the flusher task on the running loop."""
        self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def close(self) -> None:
        """Stop the flusher; writes still waiting fail as unavailable."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
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
            if self._in_flight:
                # Normally the previous batch is answered within a round trip and the next one
                # has gathered meanwhile (group commit). A batch held up (a WAIT that cannot be
                # met, a node failing over) must not hold every later request with it, so past
                # a short stall the next batch goes out alongside it.
                await asyncio.wait(self._in_flight, timeout=_STALL_SECONDS)
                if len(self._in_flight) >= _MAX_IN_FLIGHT:
                    await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
            batch = [(request, future) for request, future in self._pending if not future.done()]
            self._pending = []
            if not batch:
                continue
            task = asyncio.get_running_loop().create_task(self._flush(batch))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _flush(
        self, batch: list[tuple[BatchWrite, asyncio.Future[list[WriteOutcome]]]]
    ) -> None:
        """Write one batch; each request's future is settled as soon as its own writes are."""

        def settle(index: int, outcome: list[WriteOutcome] | Exception) -> None:
            future = batch[index][1]
            if future.done():
                return
            if isinstance(outcome, list):
                future.set_result(outcome)
            else:
                future.set_exception(outcome)

        try:
            await self._send([request for request, _ in batch], settle)
        except (RedisError, RedisClusterException, OSError, TimeoutError) as error:
            failure = IntakeUnavailableError(f"Redis is unavailable ({type(error).__name__})")
            for index in range(len(batch)):
                settle(index, failure)
        except Exception:
            # A bug of ours must still answer every request (503), not leave it to time out.
            log.exception("unexpected error writing a batch")
            failure = IntakeUnavailableError("the write failed unexpectedly")
            for index in range(len(batch)):
                settle(index, failure)

    async def _send(
        self,
        batch: list[BatchWrite],
        settle: Callable[[int, list[WriteOutcome] | Exception], None],
    ) -> None:
        """Write the batch: the rate limits first when decided apart, then every node's calls
        concurrently; ``settle(index, outcome)`` as soon as a request is decided."""
        results: list[list[WriteOutcome | None] | Exception] = [
            [None] * len(request.messages) for request in batch
        ]
        if self._layout.tagged and any(request.per_second > 0 for request in batch):
            for index, wait in (await self._rate_limit(batch)).items():
                seconds = max(1, math.ceil(wait))
                results[index] = [
                    WriteOutcome("limited", retry_after=seconds) for _ in batch[index].messages
                ]
        decided = {i for i, result in enumerate(results) if _decided(result)}
        for index in decided:
            settle(index, _settled(results[index]))
        calls = self._calls(batch, skip=decided)
        if not calls:
            return
        if self._sha is None:
            self._sha = str(await self._redis.script_load(_SCRIPT))
        # How many calls each request still waits for: it is settled when that reaches 0.
        waiting = Counter(segment.request for call in calls for segment in call.segments)
        by_node: dict[str, list[_Call]] = {}
        for call in calls:
            node = await writer_node(self._redis, call.partition.stream)
            by_node.setdefault(node.name if node else "", []).append(call)

        async def write(node_calls: list[_Call]) -> None:
            try:
                replies = await self._write_calls(node_calls)
            except (RedisError, RedisClusterException, OSError, TimeoutError) as error:
                failure = IntakeUnavailableError(f"Redis is unavailable ({type(error).__name__})")
                replies = [failure] * len(node_calls)
            for call, reply in zip(node_calls, replies, strict=True):
                _distribute(batch, call, reply, results)
                for segment in call.segments:
                    waiting[segment.request] -= 1
                    if waiting[segment.request] == 0:
                        settle(segment.request, _settled(results[segment.request]))

        await asyncio.gather(*(write(node_calls) for node_calls in by_node.values()))

    async def _write_calls(self, calls: list[_Call]) -> list[Any]:
        """One node's calls; those refused with NOSCRIPT are sent again once reloaded."""
        replies = await self._round(calls)
        again = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if again:
            # A restarted or newly promoted primary lost its script cache; NOSCRIPT means the
            # call ran nothing there, so load the script again and resend just those calls.
            self._sha = str(await self._redis.script_load(_SCRIPT))
            for i, reply in zip(again, await self._round([calls[i] for i in again]), strict=True):
                replies[i] = reply
        return replies

    async def _rate_limit(self, batch: list[BatchWrite]) -> dict[int, float]:
        """Decide the rate limits of the batch's limited requests; {index: seconds to wait}."""
        if self._rate_sha is None:
            self._rate_sha = str(await self._redis.script_load(_RATE_SCRIPT))
        limited = [(i, r) for i, r in enumerate(batch) if r.per_second > 0]
        keys = [self._layout.rate_key(request.tenant) for _, request in limited]
        args: list[float | int] = []
        for _, request in limited:
            args += (len(request.messages), request.per_second, request.burst)
        try:
            reply = await self._redis.evalsha(self._rate_sha, len(keys), *keys, *args)
        except NoScriptError:
            self._rate_sha = str(await self._redis.script_load(_RATE_SCRIPT))
            reply = await self._redis.evalsha(self._rate_sha, len(keys), *keys, *args)
        waits: dict[int, float] = {}
        for (index, _), value in zip(limited, reply, strict=True):
            text = value.decode() if isinstance(value, bytes) else str(value)
            if text:
                waits[index] = float(text)
        return waits

    def _calls(self, batch: list[BatchWrite], *, skip: set[int]) -> list[_Call]:
        """Group the events into script calls: by partition, at most _MAX_BATCH events each."""
        layout = self._layout
        open_calls: dict[int, _Call] = {}
        calls: list[_Call] = []
        for index, request in enumerate(batch):
            if index in skip:
                continue
            by_partition: dict[int, list[int]] = {}
            for position, key in enumerate(request.idempotency_keys):
                partition = layout.partition_for(request.tenant, key)
                by_partition.setdefault(partition.index, []).append(position)
            for partition_index, positions in by_partition.items():
                partition = layout.partitions[partition_index]
                call = open_calls.get(partition_index)
                if call is None or call.events + len(positions) > _MAX_BATCH:
                    call = open_calls[partition_index] = _Call(partition)
                    calls.append(call)
                # Tagged: the limit was decided by _rate_limit; the stream stands in for the
                # bucket so every key of the call stays in the partition's slot.
                rate_key = partition.stream if layout.tagged else layout.rate_key(request.tenant)
                per_second = 0.0 if layout.tagged else request.per_second
                call.segments.append(
                    _Segment(
                        request=index,
                        positions=positions,
                        messages=[request.messages[p] for p in positions],
                        hint_keys=[
                            partition.hint_key(request.tenant, request.idempotency_keys[p])
                            for p in positions
                        ],
                        hint_ttl=request.hint_ttl,
                        rate_key=rate_key,
                        per_second=per_second,
                        burst=request.burst,
                    )
                )
                call.events += len(positions)
        return calls

    async def _round(self, calls: list[_Call]) -> list[Any]:
        """Send one node's calls in one pipeline, followed by its WAIT when asked."""
        sha = self._sha
        assert sha is not None

        def commands(pipe: Any) -> None:
            for call in calls:
                keys, args = self._call_arguments(call)
                # execute_command: redis-py refuses pipe.evalsha on a cluster, not the command.
                pipe.execute_command("EVALSHA", sha, len(keys), *keys, *args)

        try:
            return await replicated(
                self._redis,
                [call.partition.stream for call in calls],
                commands,
                replicas=self._min_replicas,
                wait_ms=self._wait_ms,
                raise_on_error=False,
            )
        except ReplicationTimeoutError as error:
            return [IntakeUnavailableError(str(error))] * len(calls)

    def _call_arguments(self, call: _Call) -> tuple[list[str], list[Any]]:
        keys: list[str] = [call.partition.stream]
        args: list[Any] = ["1" if self._min_replicas else "0"]
        for segment in call.segments:
            keys.append(segment.rate_key)
            keys += segment.hint_keys
            args += (len(segment.messages), segment.per_second, segment.burst, segment.hint_ttl)
            args += segment.messages
        return keys, args


def _decided(result: list[WriteOutcome | None] | Exception) -> bool:
    return isinstance(result, Exception) or all(outcome is not None for outcome in result)


def _distribute(
    batch: list[BatchWrite],
    call: _Call,
    reply: Any,
    results: list[list[WriteOutcome | None] | Exception],
) -> None:
    """Give each request of ``call`` its events' outcomes (or the call's error)."""
    if isinstance(reply, Exception):
        error = (
            reply
            if isinstance(reply, IntakeUnavailableError)
            else IntakeUnavailableError(f"Redis refused the write ({reply})")
        )
        for segment in call.segments:
            results[segment.request] = error
        return
    outcomes = [_outcome(reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]
    position = 0
    for segment in call.segments:
        slots = results[segment.request]
        for event in segment.positions:
            if not isinstance(slots, Exception):
                slots[event] = outcomes[position]
            position += 1


def _settled(result: list[WriteOutcome | None] | Exception) -> list[WriteOutcome] | Exception:
    if isinstance(result, Exception):
        return result
    settled = [outcome for outcome in result if outcome is not None]
    if len(settled) != len(result):  # cannot happen: every event is in exactly one call
        return IntakeUnavailableError("an event was not written")
    return settled


def _outcome(status_raw: bytes | str, value_raw: bytes | str) -> WriteOutcome:
    status = status_raw.decode() if isinstance(status_raw, bytes) else status_raw
    value = value_raw.decode() if isinstance(value_raw, bytes) else value_raw
    if status == "queued":
        return WriteOutcome("queued", entry_id=value)
    if status == "duplicate":
        return WriteOutcome("duplicate")
    return WriteOutcome("limited", retry_after=max(1, math.ceil(float(value))))
