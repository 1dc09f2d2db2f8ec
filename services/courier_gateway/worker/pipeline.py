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

from courier_gateway.worker.downstream import Downstream
from courier_gateway.worker.errors import DeferredError, ProcessingError, classify
from courier_gateway.worker.ledger import Busy, Duplicate, Ledger, now
from courier_gateway.worker.shipments import Shipments, check_event

__all__ = ["AttemptFailedError", "Pipeline", "attempt_record", "task_function"]

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
        traceparent = str(context.message.labels.get("traceparent") or _new_traceparent())
        started = now()
        clock = time.perf_counter()
        event = envelope["event"]
        key = event["idempotencyKey"]
        token: str | None = None
        fields: dict[str, Any] = {
            "traceId": envelope.get("traceId"),
            "eventId": event.get("eventId"),
            "source": event.get("source"),
            "attempt": envelope.get("attempt", 1),
        }
        try:
            claim = await self.ledger.claim(
                key=key,
                token=f"{self.worker_id}/{uuid.uuid4().hex[:8]}",
                event=event,
                trace_id=envelope["traceId"],
                reopen_dead_letter="replay" in envelope,
            )
            if isinstance(claim, Duplicate):
                self._log("duplicate", clock, fields, previous=claim.status)
                return "duplicate"
            if isinstance(claim, Busy):
                wait = max(0.05, (claim.until - datetime.now(UTC)).total_seconds() + 0.05)
                raise DeferredError("EVENT_BUSY", "another worker holds this event", delay=wait)
            token = claim.token
            check_event(event)
            if not claim.applied:
                fields["effect"] = await self.shipments.apply(envelope)
                if self.downstream is not None:
                    await self.ledger.mark_applied(key=key, token=token)
            if self.downstream is not None:
                await self.downstream.deliver(
                    _update(envelope),
                    idempotency_key=key,
                    traceparent=traceparent,
                )
            record = attempt_record(
                envelope, started=started, worker=self.worker_id, outcome="processed"
            )
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
            self._log(
                "failed",
                clock,
                fields,
                errorCode=classified.code,
                error=classified.message,
                unexpected=classified.code == "UNEXPECTED_ERROR",
                exc_info=error if classified.code == "UNEXPECTED_ERROR" else None,
            )
            raise AttemptFailedError(classified, started=started, token=token) from error
        self._log("processed", clock, fields)
        return "processed"

    @staticmethod
    def _log(
        outcome: str,
        clock: float,
        fields: dict[str, Any],
        exc_info: BaseException | None = None,
        **more: Any,
    ) -> None:
        duration = round((time.perf_counter() - clock) * 1000, 3)
        log.info(
            "job attempt",
            exc_info=exc_info,
            extra={**fields, "outcome": outcome, "durationMs": duration, **more},
        )


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
        "shipmentId": payload["shipmentId"],
        "orderId": payload.get("orderId"),
        "status": payload["status"],
        "traceId": envelope["traceId"],
    }


def _new_traceparent() -> str:
    return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
