"""The retry middleware: exponential backoff with jitter, held in Redis, then dead-letter.

taskiq's own ``SmartRetryMiddleware`` is linear, re-queues at once without a schedule source and
has no dead-letter hook, so this one replaces it. It runs in ``on_error``, before taskiq
acknowledges the failed message: the retry is durably scheduled (or the dead letter durably
written) first. If that write cannot be made (Redis or the store unreachable for longer than a
lease), the attempt ends with :class:`~courier_gateway.worker.receiver.LeaveUnacknowledgedError`:
the message stays unacknowledged and is redelivered after the idle timeout. Nothing is
acknowledged unstored.

Attempt ``n`` (1-based) that fails transiently is retried after ``base * 2**(n-1)`` (capped at
the maximum), plus 0-``jitter`` of it; with the defaults: 1, 2, 4, 8 s between the five attempts.
Deferrals (busy key, open breaker, store outage) wait without spending an attempt, but not
forever: an event still deferred ``DEFER_MAX_SECONDS`` after its first attempt is dead-lettered
``DEFERRAL_EXPIRED``, its message naming the last cause.

Each attempt that ends here is one log line (``job attempt``, with its outcome and error code):
INFO for a retry or a deferral, WARNING for a dead letter; never a traceback (the pipeline logs
one for an unexpected error only).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult

from courier_gateway.dependency import Dependency
from courier_gateway.observability.worker_metrics import RETRIES_SCHEDULED, WORKER_OUTCOMES
from courier_gateway.queue import PROCESS_EVENT_TASK, encode_message
from courier_gateway.queue.messages import ledger_id, tenant_of
from courier_gateway.queue.retry_schedule import PartitionedSchedule
from courier_gateway.queue.topology import ReplicationTimeoutError
from courier_gateway.worker.deadletters import DeadLetters
from courier_gateway.worker.errors import (
    STORE_UNAVAILABLE,
    DeferredError,
    ProcessingError,
    TerminalError,
    TransientError,
    classify,
)
from courier_gateway.worker.leases import LeaseLostError
from courier_gateway.worker.ledger import Ledger, now
from courier_gateway.worker.pipeline import (
    AttemptFailedError,
    attempt_record,
    observe_terminal,
)
from courier_gateway.worker.receiver import LeaveUnacknowledgedError

__all__ = ["RetryMiddleware", "RetryPolicy"]

log = logging.getLogger("courier_gateway.worker")

DEFERRAL_EXPIRED = "DEFERRAL_EXPIRED"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts, how long between them, and how long deferrals may go on."""

    max_attempts: int
    base_delay: float
    max_delay: float
    jitter: float
    defer_max: float = 86400.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based), jitter included."""
        exponent = min(attempt - 1, 62)
        base = min(self.base_delay * 2**exponent, self.max_delay)
        return float(base * (1 + random.uniform(0, self.jitter)))  # noqa: S311 - not cryptographic


class RetryMiddleware(TaskiqMiddleware):
    """Schedules retries and deferrals in Redis; dead-letters terminal and exhausted events."""

    def __init__(
        self,
        *,
        schedule: PartitionedSchedule,
        ledger: Ledger,
        dead_letters: DeadLetters,
        policy: RetryPolicy,
        worker_id: str,
        redis: Dependency | None = None,
        patience: float = 30.0,
    ) -> None:
        super().__init__()
        self.schedule = schedule
        self.ledger = ledger
        self.dead_letters = dead_letters
        self.policy = policy
        self.worker_id = worker_id
        self.redis = redis
        #: How long a write of the outcome may wait for an unreachable Redis (about a lease:
        #: after that the message is redelivered anyway).
        self.patience = patience

    async def on_error(
        self, message: TaskiqMessage, result: TaskiqResult[Any], exception: BaseException
    ) -> None:
        """Decide and durably store what happens next to a failed attempt."""
        if message.task_name != PROCESS_EVENT_TASK:
            return
        if isinstance(exception, LeaseLostError | asyncio.CancelledError):
            # Logged by the pipeline; the event belongs to whoever holds its key now (or to
            # whoever gets the message next): leave the message alone.
            raise LeaveUnacknowledgedError from None
        envelope: dict[str, Any] = message.kwargs["envelope"]
        failed = (
            exception
            if isinstance(exception, AttemptFailedError)
            else AttemptFailedError(
                classify(exception), started=now(), token=None, fields=_context(envelope)
            )
        )
        try:
            await self._decide(message, envelope, failed)
        except STORE_UNAVAILABLE as error:
            self._unstored(envelope, failed, "store", error)
            raise LeaveUnacknowledgedError from None
        except _RedisUnavailableError as error:
            self._unstored(envelope, failed, "redis", error.__cause__ or error)
            raise LeaveUnacknowledgedError from None

    async def _decide(
        self, message: TaskiqMessage, envelope: dict[str, Any], failed: AttemptFailedError
    ) -> None:
        error = failed.error
        first = envelope.get("firstAttemptAt") or failed.started.isoformat()
        if isinstance(error, DeferredError):
            age = (now() - datetime.fromisoformat(first)).total_seconds()
            if age < self.policy.defer_max or failed.token is None:
                # Without the key (busy, or the store was unreachable before the claim) the
                # outcome is not ours to write: wait, and expire once we hold it.
                await self._defer(message, envelope, failed, first=first, age=age)
                return
            reason = (
                f"deferred for {round(age)} s since the first attempt (limit DEFER_MAX_SECONDS"
                f" {round(self.policy.defer_max)} s); last cause: {error.code}: {error.message}"
            )
            await self._dead_letter(envelope, failed, code=DEFERRAL_EXPIRED, reason=reason)
            return
        attempt = int(envelope.get("attempt", 1))
        if isinstance(error, TransientError) and attempt < self.policy.max_attempts:
            await self._retry(message, envelope, failed, first=first, attempt=attempt)
            return
        if isinstance(error, TerminalError):
            code, reason = error.code, error.message
        else:
            code = "RETRIES_EXHAUSTED"
            reason = f"{attempt} attempts failed; last: {error.code}: {error.message}"
        await self._dead_letter(envelope, failed, code=code, reason=reason)

    async def _retry(
        self,
        message: TaskiqMessage,
        envelope: dict[str, Any],
        failed: AttemptFailedError,
        *,
        first: str,
        attempt: int,
    ) -> None:
        error = failed.error
        assert isinstance(error, TransientError)
        attempts = list(envelope.get("attempts", []))
        record = attempt_record(
            envelope, started=failed.started, worker=self.worker_id, outcome="retry", error=error
        )
        delay = max(self.policy.delay(attempt), error.retry_after or 0.0)
        retry = {
            **envelope,
            "attempt": attempt + 1,
            "attempts": [*attempts, record],
            "deferrals": 0,
            "firstAttemptAt": first,
        }
        body = encode_message(retry, message.labels)
        schedule = self.schedule.for_event(envelope)
        await self._redis_write(lambda: schedule.schedule(body, delay))
        WORKER_OUTCOMES.labels("retried").inc()
        RETRIES_SCHEDULED.labels("retry", error.code.lower()).inc()
        _attempt_line(
            failed, outcome="retry_scheduled", delaySeconds=round(delay, 3), attempt=attempt
        )
        if failed.token is not None:
            await self._release(envelope, failed.token, [*attempts, record])

    async def _defer(
        self,
        message: TaskiqMessage,
        envelope: dict[str, Any],
        failed: AttemptFailedError,
        *,
        first: str,
        age: float,
    ) -> None:
        error = failed.error
        assert isinstance(error, DeferredError)
        deferrals = int(envelope.get("deferrals", 0)) + 1
        delay = error.delay if error.delay > 0 else self.policy.delay(min(deferrals, 8))
        remaining = self.policy.defer_max - age
        if failed.token is not None and remaining > 0:
            # Come back when the limit is reached rather than long after it.
            delay = max(0.05, min(delay, remaining))
        body = encode_message(
            {**envelope, "deferrals": deferrals, "firstAttemptAt": first}, message.labels
        )
        first_ms = int(datetime.fromisoformat(first).timestamp() * 1000)
        schedule = self.schedule.for_event(envelope)
        await self._redis_write(lambda: schedule.defer(body, delay, first_attempt_ms=first_ms))
        WORKER_OUTCOMES.labels("deferred").inc()
        RETRIES_SCHEDULED.labels("deferral", error.code.lower()).inc()
        _attempt_line(failed, outcome="deferred", delaySeconds=round(delay, 3), deferrals=deferrals)
        if failed.token is not None:
            # Not an attempt: give the key back with its attempts unchanged.
            await self._release(envelope, failed.token, list(envelope.get("attempts", [])))

    async def _dead_letter(
        self, envelope: dict[str, Any], failed: AttemptFailedError, *, code: str, reason: str
    ) -> None:
        record = attempt_record(
            envelope,
            started=failed.started,
            worker=self.worker_id,
            outcome="dead_lettered",
            error=failed.error,
        )
        history = [*envelope.get("attempts", []), record]
        await self.dead_letters.record(
            envelope, reason_code=code, reason_message=reason, attempts=history
        )
        if failed.token is not None:
            await self.ledger.finish(
                key=ledger_id(envelope),
                token=failed.token,
                status="dead_lettered",
                attempts=history,
            )
        WORKER_OUTCOMES.labels("dead_lettered").inc()
        observe_terminal("dead_lettered", envelope)
        _attempt_line(
            failed,
            outcome="dead_lettered",
            level=logging.WARNING,
            reasonCode=code,
            reason=reason,
            attempts=len(history),
        )

    async def _redis_write(self, write: Callable[[], Awaitable[None]]) -> None:
        try:
            if self.redis is None:
                await write()
            else:
                await self.redis.call(write, patience=self.patience)
        except ReplicationTimeoutError as error:
            # Scheduled, but not confirmed by ENQUEUE_MIN_REPLICAS replicas: acknowledging now
            # could lose the event in a failover, so the message stays unacknowledged and is
            # delivered again after the idle timeout (the ledger fences the copies).
            raise _RedisUnavailableError from error
        except Exception as error:
            if self.redis is not None and isinstance(error, self.redis.unavailable):
                raise _RedisUnavailableError from error
            raise

    async def _release(
        self, envelope: dict[str, Any], token: str, attempts: list[dict[str, Any]]
    ) -> None:
        try:
            await self.ledger.release(key=ledger_id(envelope), token=token, attempts=attempts)
        except STORE_UNAVAILABLE:
            # The retry is already scheduled; the lease simply expires.
            log.info("could not release the lease; it will expire", extra=_context(envelope))

    @staticmethod
    def _unstored(
        envelope: dict[str, Any], failed: AttemptFailedError, where: str, error: BaseException
    ) -> None:
        _attempt_line(
            failed,
            outcome="unacknowledged",
            level=logging.WARNING,
            unreachable=where,
            error=f"{type(error).__name__}: {str(error)[:200]}",
            note="the outcome could not be stored; the message is redelivered after the idle"
            " timeout",
        )


class _RedisUnavailableError(Exception):
    """Redis stayed unreachable for longer than the middleware's patience."""


def _attempt_line(
    failed: AttemptFailedError, *, outcome: str, level: int = logging.INFO, **more: Any
) -> None:
    """The failed attempt's one log line: its context, outcome and error code."""
    error: ProcessingError = failed.error
    line = {
        **failed.fields,
        "outcome": outcome,
        "errorCode": error.code,
        "error": error.message,
        **more,
    }
    log.log(level, "job attempt", extra=line)


def _context(envelope: dict[str, Any], **fields: Any) -> dict[str, Any]:
    event = envelope.get("event", {})
    return {
        "traceId": envelope.get("traceId"),
        "eventId": event.get("eventId"),
        "source": tenant_of(envelope),
        **fields,
    }
