"""One event's processing: claim → check → apply → fence → deliver → mark processed.

The task returns only when the outcome is stored (taskiq then acknowledges the message). A
failure is raised as :class:`AttemptFailedError`, classified, for the retry middleware to schedule
or dead-letter and to log as the attempt's one line; the pipeline itself never sleeps on a retry.
A job that finds its key taken over (see :mod:`~courier_gateway.worker.leases`) logs one line and
raises :class:`~courier_gateway.worker.leases.LeaseLostError`: it stops with no side effect and
leaves its message to whoever holds the event now.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from taskiq import Context, TaskiqDepends

from courier_gateway.observability import SpanHandle, span
from courier_gateway.observability.logs import log_line
from courier_gateway.observability.metrics import DUPLICATES
from courier_gateway.observability.worker_metrics import (
    END_TO_END,
    JOBS_IN_FLIGHT,
    PROCESSING,
    WORKER_OUTCOMES,
)
from courier_gateway.queue.messages import ledger_id, tenant_of
from courier_gateway.worker.downstream import Downstream
from courier_gateway.worker.errors import (
    STORE_UNAVAILABLE,
    DeferredError,
    ProcessingError,
    classify,
)
from courier_gateway.worker.leases import LeaseLostError, Leases
from courier_gateway.worker.ledger import Busy, Duplicate, Ledger, now
from courier_gateway.worker.send_window import SendWindowClosedError
from courier_gateway.worker.shipments import Shipments, check_event

__all__ = [
    "AttemptFailedError",
    "Pipeline",
    "attempt_record",
    "observe_terminal",
    "task_function",
]

log = logging.getLogger("courier_gateway.worker")

# Outcomes with their own processing-time series; the others count as "failed".
_TIMED = frozenset({"processed", "duplicate"})

# taskiq injects the running message's context (its labels carry the traceparent).
_TASK_CONTEXT: Any = TaskiqDepends()


class AttemptFailedError(Exception):
    """An attempt failed; carries the classified error and what the middleware needs.

    ``fields`` is the attempt's log context (trace, event, duration): the middleware writes the
    attempt's one line once it knows the outcome (retry scheduled, deferred, dead-lettered).
    """

    def __init__(
        self,
        error: ProcessingError,
        *,
        started: datetime,
        token: str | None,
        fields: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(error.message)
        self.error = error
        self.started = started
        self.token = token
        self.fields = fields or {}


def attempt_record(
    envelope: dict[str, Any],
    *,
    started: datetime,
    worker: str,
    outcome: str,
    error: ProcessingError | None = None,
) -> dict[str, Any]:
    """The JSON form of one attempt, as carried in the envelope and stored."""
    return {
        "number": len(envelope.get("attempts", [])) + 1,
        "round": envelope.get("round", 1),
        "startedAt": started.isoformat(),
        "endedAt": now().isoformat(),
        "worker": worker,
        "outcome": outcome,
        "errorCode": error.code if error else None,
        "errorMessage": error.message if error else None,
    }


@dataclass(slots=True)
class _Attempt:
    """One attempt's bookkeeping: its key, start, log context and, once claimed, its token."""

    key: str
    started: datetime
    clock: float
    fields: dict[str, Any]
    token: str | None = None


@dataclass
class Pipeline:
    """The processing steps, bound to the worker's store and downstream clients."""

    ledger: Ledger
    shipments: Shipments
    downstream: Downstream | None
    worker_id: str
    leases: Leases

    async def process(self, envelope: dict[str, Any], context: Context = _TASK_CONTEXT) -> str:
        """The taskiq task: bring one event to a stored outcome, or raise AttemptFailedError."""
        JOBS_IN_FLIGHT.inc()
        try:
            with span(
                "process event",
                parent=str(context.message.labels.get("traceparent") or "") or None,
                kind="consumer",
                attributes={"courier.event_id": envelope["event"].get("eventId", "")},
            ) as job:
                return await self._process(envelope, job)
        finally:
            JOBS_IN_FLIGHT.dec()

    async def _process(self, envelope: dict[str, Any], job: SpanHandle) -> str:
        event = envelope["event"]
        attempt = _Attempt(
            # The ledger id is scoped by the authenticated source: no other source can claim it.
            key=ledger_id(envelope),
            started=now(),
            clock=time.perf_counter(),
            fields={
                "traceId": envelope.get("traceId"),
                "spanId": job.span_id,
                "eventId": event.get("eventId"),
                "source": tenant_of(envelope),
                "attempt": envelope.get("attempt", 1),
            },
        )
        key, clock, fields = attempt.key, attempt.clock, attempt.fields
        try:
            outcome = await self._steps(envelope, job, attempt)
        except LeaseLostError:
            self._finish("lease_lost", clock, fields, level=logging.WARNING)
            raise
        except asyncio.CancelledError:
            # Stopped past the drain timeout: give the key back for whoever gets the message.
            if attempt.token is not None:
                await self._release_on_cancel(key, attempt.token, envelope)
            self._finish("released", clock, fields, level=logging.WARNING)
            raise
        except Exception as error:
            classified = classify(error)
            duration = time.perf_counter() - clock
            PROCESSING.labels("failed").observe(duration)
            if classified.code == "UNEXPECTED_ERROR":
                log.error("unexpected error in a job", exc_info=error, extra=fields)
            fields["durationMs"] = round(duration * 1000, 3)
            raise AttemptFailedError(
                classified, started=attempt.started, token=attempt.token, fields=fields
            ) from error
        finally:
            if attempt.token is not None:
                self.leases.drop(key, attempt.token)
        if outcome == "processed":
            self._finish("processed", clock, fields)
            observe_terminal("processed", envelope)
        return outcome

    async def _steps(self, envelope: dict[str, Any], job: SpanHandle, attempt: _Attempt) -> str:
        """Claim, check, apply, fence, deliver, mark; ``processed`` or ``duplicate``."""
        event = envelope["event"]
        key = attempt.key
        with span("ledger claim", parent=job):
            claim = await self.ledger.claim(
                key=key,
                token=f"{self.worker_id}/{uuid.uuid4().hex[:8]}",
                tenant=tenant_of(envelope),
                event=event,
                trace_id=envelope["traceId"],
                reopen_dead_letter="replay" in envelope,
            )
        if isinstance(claim, Duplicate):
            DUPLICATES.labels("ledger").inc()
            self._finish("duplicate", attempt.clock, attempt.fields, previous=claim.status)
            return "duplicate"
        if isinstance(claim, Busy):
            wait = max(0.05, (claim.until - datetime.now(UTC)).total_seconds() + 0.05)
            raise DeferredError("EVENT_BUSY", "another worker holds this event", delay=wait)
        token = attempt.token = claim.token
        self.leases.hold(key, token)
        check_event(event)
        if not claim.applied:
            with span("apply shipment", parent=job):
                attempt.fields["effect"] = await self.shipments.apply(envelope)
        if self.downstream is not None:
            # Still ours? One round trip that also renews the lease and, the first time,
            # records that the store step ran (a retry skips it). The request must then be on
            # the wire before the lease it bought runs out.
            deadline = await self.leases.fence(key, token, applied=not claim.applied)
            with span("POST downstream", parent=job, kind="client") as call:
                try:
                    await self.downstream.deliver(
                        _update(envelope),
                        idempotency_key=key,
                        traceparent=call.traceparent,
                        deadline=deadline,
                    )
                except SendWindowClosedError:
                    # Paused between the fence and the wire: not sent; whoever holds the key
                    # now (maybe still us) finishes the event from a redelivery.
                    raise LeaseLostError(key) from None
        record = attempt_record(
            envelope, started=attempt.started, worker=self.worker_id, outcome="processed"
        )
        with span("ledger mark processed", parent=job):
            kept = await self.ledger.finish(
                key=key,
                token=token,
                status="processed",
                attempts=[*envelope.get("attempts", []), record],
            )
        if not kept:
            # Another worker took the key over after our fence: it finishes the event (the
            # effect is keyed by idempotency key, so it is applied once either way).
            raise LeaseLostError(key)
        return "processed"

    async def _release_on_cancel(self, key: str, token: str, envelope: dict[str, Any]) -> None:
        try:
            async with asyncio.timeout(2):
                await self.ledger.release(
                    key=key, token=token, attempts=list(envelope.get("attempts", []))
                )
        except (TimeoutError, *STORE_UNAVAILABLE):
            pass  # the lease expires by itself

    @staticmethod
    def _finish(
        outcome: str,
        clock: float,
        fields: dict[str, Any],
        *,
        level: int = logging.INFO,
        **more: Any,
    ) -> None:
        """Count, time and log one attempt that ended here (one JSON line per job attempt)."""
        duration = time.perf_counter() - clock
        PROCESSING.labels(outcome if outcome in _TIMED else "failed").observe(duration)
        WORKER_OUTCOMES.labels(outcome).inc()
        line = {**fields, "outcome": outcome, "durationMs": round(duration * 1000, 3), **more}
        if level == logging.INFO:
            log_line(log, "job attempt", line)  # the common case, without logging's machinery
        else:
            log.log(level, "job attempt", extra=line)


def observe_terminal(outcome: str, envelope: dict[str, Any]) -> None:
    """Record receivedAt → terminal for an event that reached ``outcome``."""
    try:
        received = datetime.fromisoformat(str(envelope["receivedAt"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return
    END_TO_END.labels(outcome).observe(max(0.0, (datetime.now(UTC) - received).total_seconds()))


def task_function(pipeline: Pipeline) -> Callable[..., Awaitable[str]]:
    """A plain function for taskiq to register (it renames functions, which methods refuse)."""

    async def process_event(envelope: dict[str, Any], context: Context = _TASK_CONTEXT) -> str:
        return await pipeline.process(envelope, context)

    return process_event


def _update(envelope: dict[str, Any]) -> dict[str, Any]:
    event = envelope["event"]
    payload = event["payload"]
    return {
        "eventId": event["eventId"],
        "idempotencyKey": event["idempotencyKey"],
        "eventType": event["eventType"],
        "occurredAt": event["occurredAt"],
        "source": event["source"],
        "tenant": tenant_of(envelope),
        "shipmentId": payload["shipmentId"],
        "orderId": payload.get("orderId"),
        "status": payload["status"],
        "traceId": envelope["traceId"],
    }
