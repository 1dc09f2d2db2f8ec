"""The worker's Prometheus metrics (imported only by the worker; see ``metrics.py``)."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from courier_gateway.observability.metrics import DUPLICATES, DeprecatedNames

__all__ = [
    "BREAKER_STATE",
    "DEAD_LETTERS_PENDING",
    "DEFERRAL_OLDEST_AGE",
    "END_TO_END",
    "JOBS_IN_FLIGHT",
    "PROCESSING",
    "QUEUE_LAG",
    "RETRIES_PENDING",
    "RETRIES_SCHEDULED",
    "STORE_OPERATIONS",
    "WORKER_OUTCOMES",
    "WORKER_UP",
    "prime_worker",
]

_WORK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_E2E_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)

WORKER_OUTCOMES = Counter(
    "courier_gateway_worker_outcomes_total",
    "Job attempts by outcome: processed, duplicate, retried, deferred, dead_lettered,"
    " lease_lost (the key was taken over: stopped without side effects), released (stopped"
    " past the drain timeout).",
    ["outcome"],
)
PROCESSING = Histogram(
    "courier_gateway_processing_seconds",
    "Time one job attempt took, by outcome.",
    ["outcome"],
    buckets=_WORK_BUCKETS,
)
END_TO_END = Histogram(
    "courier_gateway_end_to_end_seconds",
    "From receivedAt at intake to the event's terminal state, by terminal outcome.",
    ["outcome"],
    buckets=_E2E_BUCKETS,
)
RETRIES_SCHEDULED = Counter(
    "courier_gateway_retries_scheduled_total",
    "Messages put on the delayed-retry schedule: kind=retry (spends an attempt) or deferral.",
    ["kind", "reason"],
)
JOBS_IN_FLIGHT = Gauge(
    "courier_gateway_jobs_in_flight",
    "Jobs running in this worker now.",
    multiprocess_mode="livesum",
)
QUEUE_LAG = Gauge(
    "courier_gateway_queue_lag_messages",
    "Stream entries not yet delivered to the workers plus delivered but unacknowledged.",
    ["state"],
    multiprocess_mode="max",
)
# The former name, exported as well until the next release (CHANGELOG.md).
REGISTRY.register(
    DeprecatedNames(
        {"courier_gateway_queue_lag": (QUEUE_LAG, "courier_gateway_queue_lag_messages")}
    )
)
RETRIES_PENDING = Gauge(
    "courier_gateway_retries_pending",
    "Messages waiting on the delayed-retry schedule.",
    multiprocess_mode="max",
)
DEAD_LETTERS_PENDING = Gauge(
    "courier_gateway_dead_letters_pending",
    "Dead letters waiting for review (reviewStatus pending).",
    multiprocess_mode="max",
)
DEFERRAL_OLDEST_AGE = Gauge(
    "courier_gateway_deferral_oldest_age_seconds",
    "Seconds since the first attempt of the oldest event waiting on a deferral (0: none);"
    " such an event is dead-lettered DEFERRAL_EXPIRED after DEFER_MAX_SECONDS.",
    multiprocess_mode="max",
)
BREAKER_STATE = Gauge(
    "courier_gateway_downstream_breaker_state",
    "Downstream circuit breaker per host: 0 closed, 1 half-open, 2 open.",
    ["host"],
    multiprocess_mode="max",
)
STORE_OPERATIONS = Counter(
    "courier_gateway_store_operations_total",
    "MongoDB commands sent by the worker (one per round trip), by command name.",
    ["command"],
)
WORKER_UP = Gauge(
    "courier_gateway_worker_up",
    "1 while this worker is consuming; 0 while draining.",
    multiprocess_mode="livesum",
)


def prime_worker() -> None:
    """Create the worker's labelled series at zero (see ``prime_intake``)."""
    for outcome in (
        "processed",
        "duplicate",
        "retried",
        "deferred",
        "dead_lettered",
        "lease_lost",
        "released",
    ):
        WORKER_OUTCOMES.labels(outcome)
    for outcome in ("processed", "duplicate", "failed"):
        PROCESSING.labels(outcome)
    for outcome in ("processed", "dead_lettered"):
        END_TO_END.labels(outcome)
    for state in ("undelivered", "pending"):
        QUEUE_LAG.labels(state)
    DUPLICATES.labels("ledger")
