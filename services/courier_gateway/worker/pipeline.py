"""One event's processing: claim → check → apply → deliver → mark processed.

The task returns only when the outcome is stored (taskiq then acknowledges the message). A
failure is raised as :class:`AttemptFailedError`, classified, for the retry middleware to schedule
or dead-letter; the pipeline itself never sleeps on a retry.
"""

from __future__ import annotations

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
from courier_gateway.worker.errors import DeferredError, ProcessingError, classify
from courier_gateway.worker.ledger import Busy, Duplicate, Ledger, now
from courier_gateway.worker.shipments import Shipments, check_event

__all__ = [
    "AttemptFailedError",
    "Pipeline",
    "attempt_record",
    "observe_terminal",
    "task_function",
]

log = logging.getLogger("courier_gateway.worker")

# taskiq injects the running message's context (its labels carry the traceparent).
_TASK_CONTEXT: Any = TaskiqDepends()


class AttemptFailedError(Exception):
    """An attempt failed; carries the classified error and what the middleware needs."""

    def __init__(self, error: ProcessingError, *, started: datetime, token: str | None) -> None:
        super().__init__(error.message)
        self.error = error
        self.started = started
        self.token = token


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


@dataclass
class Pipeline:
    """The processing steps, bound to the worker's store and downstream clients."""

    ledger: Ledger
    shipments: Shipments
    downstream: Downstream | None
    worker_id: str

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
        started = now()
        clock = time.perf_counter()
        event = envelope["event"]
        # The ledger id is scoped by the authenticated source: no other source can claim it.
        key = ledger_id(envelope)
        token: str | None = None
        fields: dict[str, Any] = {
            "traceId": envelope.get("traceId"),
            "spanId": job.span_id,
            "eventId": event.get("eventId"),
            "source": tenant_of(envelope),
            "attempt": envelope.get("attempt", 1),
        }
        try:
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
                self._finish("duplicate", clock, fields, previous=claim.status)
                return "duplicate"
            if isinstance(claim, Busy):
                wait = max(0.05, (claim.until - datetime.now(UTC)).total_seconds() + 0.05)
                raise DeferredError("EVENT_BUSY", "another worker holds this event", delay=wait)
            token = claim.token
            check_event(event)
            if not claim.applied:
                with span("apply shipment", parent=job):
                    fields["effect"] = await self.shipments.apply(envelope)
                    if self.downstream is not None:
                        await self.ledger.mark_applied(key=key, token=token)
            if self.downstream is not None:
                with span("POST downstream", parent=job, kind="client") as call:
                    await self.downstream.deliver(
                        _update(envelope), idempotency_key=key, traceparent=call.traceparent
                    )
            record = attempt_record(
                envelope, started=started, worker=self.worker_id, outcome="processed"
            )
            with span("ledger mark processed", parent=job):
                kept = await self.ledger.finish(
                    key=key,
                    token=token,
                    status="processed",
                    attempts=[*envelope.get("attempts", []), record],
                )
            if not kept:
                # Our lease expired and another worker took the key: it will finish it; the
                # effect is applied once either way (the history is keyed by idempotency key).
                fields["leaseLost"] = True
        except AttemptFailedError:
            raise
        except Exception as error:
            classified = classify(error)
            unexpected = classified.code == "UNEXPECTED_ERROR"
            self._finish(
                "failed",
                clock,
                fields,
                exc_info=error if unexpected else None,
                errorCode=classified.code,
                error=classified.message,
            )
            raise AttemptFailedError(classified, started=started, token=token) from error
        self._finish("processed", clock, fields)
        observe_terminal("processed", envelope)
        return "processed"

    @staticmethod
    def _finish(
        outcome: str,
        clock: float,
        fields: dict[str, Any],
        exc_info: BaseException | None = None,
        **more: Any,
    ) -> None:
        """Count, time and log one attempt (one JSON line per job attempt)."""
        duration = time.perf_counter() - clock
        PROCESSING.labels(outcome).observe(duration)
        if outcome != "failed":
            WORKER_OUTCOMES.labels(outcome).inc()
        line = {**fields, "outcome": outcome, "durationMs": round(duration * 1000, 3), **more}
        if exc_info is None:
            log_line(log, "job attempt", line)  # the common case, without logging's machinery
        else:
            log.info("job attempt", exc_info=exc_info, extra=line)


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
