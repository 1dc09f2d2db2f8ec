"""The retry middleware: exponential backoff with jitter, held in Redis, then dead-letter.

taskiq's own ``SmartRetryMiddleware`` is linear, re-queues at once without a schedule source and
has no dead-letter hook, so this one replaces it. It runs in ``on_error``, before taskiq
acknowledges the failed message: the retry is durably scheduled (or the dead letter durably
written) first, and if that write fails the exception propagates, the message stays
unacknowledged, and it is redelivered after the idle timeout. Nothing is acknowledged unstored.

Attempt ``n`` (1-based) that fails transiently is retried after ``base * 2**(n-1)`` (capped at
the maximum), plus 0-``jitter`` of it; with the defaults: 1, 2, 4, 8 s between the five attempts.
Deferrals (busy key, open breaker, store outage) wait without spending an attempt.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

from taskiq import TaskiqMessage, TaskiqMiddleware, TaskiqResult

from courier_gateway.observability.worker_metrics import RETRIES_SCHEDULED, WORKER_OUTCOMES
from courier_gateway.queue import PROCESS_EVENT_TASK, encode_message
from courier_gateway.queue.messages import ledger_id, tenant_of
from courier_gateway.queue.retry_schedule import RetrySchedule
from courier_gateway.worker.deadletters import DeadLetters
from courier_gateway.worker.errors import (
    STORE_UNAVAILABLE,
    DeferredError,
    TerminalError,
    TransientError,
    classify,
)
from courier_gateway.worker.ledger import Ledger, now
from courier_gateway.worker.pipeline import (
    AttemptFailedError,
    attempt_record,
    observe_terminal,
)

__all__ = ["RetryMiddleware", "RetryPolicy"]

log = logging.getLogger("courier_gateway.worker")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts, and how long between them."""

    max_attempts: int
    base_delay: float
    max_delay: float
    jitter: float

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
        schedule: RetrySchedule,
        ledger: Ledger,
        dead_letters: DeadLetters,
        policy: RetryPolicy,
        worker_id: str,
    ) -> None:
        super().__init__()
        self.schedule = schedule
        self.ledger = ledger
        self.dead_letters = dead_letters
        self.policy = policy
        self.worker_id = worker_id

    async def on_error(
        self, message: TaskiqMessage, result: TaskiqResult[Any], exception: BaseException
    ) -> None:
        """Decide and durably store what happens next to a failed attempt."""
        if message.task_name != PROCESS_EVENT_TASK:
            return
        envelope: dict[str, Any] = message.kwargs["envelope"]
        failed = (
            exception
            if isinstance(exception, AttemptFailedError)
            else AttemptFailedError(classify(exception), started=now(), token=None)
        )
        error = failed.error
        if isinstance(error, DeferredError):
            await self._defer(message, envelope, error)
            if failed.token is not None:
                # Not an attempt: give the key back with its attempts unchanged.
                await self._release(envelope, failed.token, list(envelope.get("attempts", [])))
            return
        attempt = int(envelope.get("attempt", 1))
        attempts = list(envelope.get("attempts", []))
        if isinstance(error, TransientError) and attempt < self.policy.max_attempts:
            record = attempt_record(
                envelope,
                started=failed.started,
                worker=self.worker_id,
                outcome="retry",
                error=error,
            )
            delay = max(self.policy.delay(attempt), error.retry_after or 0.0)
            retry = {
                **envelope,
                "attempt": attempt + 1,
                "attempts": [*attempts, record],
                "deferrals": 0,
            }
            await self.schedule.schedule(encode_message(retry, message.labels), delay)
            WORKER_OUTCOMES.labels("retried").inc()
            RETRIES_SCHEDULED.labels("retry", error.code.lower()).inc()
            log.info(
                "retry scheduled",
                extra=_context(
                    envelope, attempt=attempt, delaySeconds=round(delay, 3), errorCode=error.code
                ),
            )
            if failed.token is not None:
                await self._release(envelope, failed.token, [*attempts, record])
            return
        record = attempt_record(
            envelope,
            started=failed.started,
            worker=self.worker_id,
            outcome="dead_lettered",
            error=error,
        )
        history = [*attempts, record]
        if isinstance(error, TerminalError):
            code, reason = error.code, error.message
        else:
            code = "RETRIES_EXHAUSTED"
            reason = f"{attempt} attempts failed; last: {error.code}: {error.message}"
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
        log.warning(
            "dead-lettered", extra=_context(envelope, reasonCode=code, attempts=len(history))
        )

    async def _defer(
        self, message: TaskiqMessage, envelope: dict[str, Any], error: DeferredError
    ) -> None:
        deferrals = int(envelope.get("deferrals", 0)) + 1
        delay = error.delay if error.delay > 0 else self.policy.delay(min(deferrals, 8))
        await self.schedule.schedule(
            encode_message({**envelope, "deferrals": deferrals}, message.labels), delay
        )
        WORKER_OUTCOMES.labels("deferred").inc()
        RETRIES_SCHEDULED.labels("deferral", error.code.lower()).inc()
        log.info(
            "deferred",
            extra=_context(
                envelope, reason=error.code, delaySeconds=round(delay, 3), deferrals=deferrals
            ),
        )

    async def _release(
        self, envelope: dict[str, Any], token: str, attempts: list[dict[str, Any]]
    ) -> None:
        try:
            await self.ledger.release(key=ledger_id(envelope), token=token, attempts=attempts)
        except STORE_UNAVAILABLE:
            # The retry is already scheduled; the lease simply expires.
            log.info("could not release the lease; it will expire", extra=_context(envelope))


def _context(envelope: dict[str, Any], **fields: Any) -> dict[str, Any]:
    event = envelope.get("event", {})
    return {
        "traceId": envelope.get("traceId"),
        "eventId": event.get("eventId"),
        "source": tenant_of(envelope),
        **fields,
    }
