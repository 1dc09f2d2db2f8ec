"""Prometheus metrics, prefix ``courier_gateway_`` (catalogue in ``docs/observability.md``).

Label values are bounded: sources are configured names (``unknown`` otherwise), outcomes and
reasons are fixed vocabularies, hosts come from configuration. No event ids, no raw paths.

With several ingress processes, prometheus-client's multiprocess mode is used: the serving
command points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory *before* this module is
imported (the value class is chosen at import), and ``/metrics`` aggregates every process's
files, so one scrape reports one consistent set.
"""

from __future__ import annotations

import os

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from courier_gateway import __version__

__all__ = [
    "BREAKER_STATE",
    "BUILD_INFO",
    "DEAD_LETTERS_PENDING",
    "DUPLICATES",
    "END_TO_END",
    "ENQUEUED",
    "INTAKE_LATENCY",
    "INTAKE_REQUESTS",
    "JOBS_IN_FLIGHT",
    "LEGACY_SIGNATURES",
    "PROCESSING",
    "QUEUE_LAG",
    "RETRIES_PENDING",
    "RETRIES_SCHEDULED",
    "SIGNATURE_FAILURES",
    "STORE_OPERATIONS",
    "WORKER_OUTCOMES",
    "WORKER_UP",
    "declare_build",
    "render",
]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_WORK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_E2E_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)

# Intake (ingress processes).
INTAKE_REQUESTS = Counter(
    "courier_gateway_intake_requests_total",
    "Intake requests by source and outcome (accepted, duplicate, or the error code in lower case).",
    ["source", "outcome"],
)
INTAKE_LATENCY = Histogram(
    "courier_gateway_intake_latency_seconds",
    "Time from request to response at the ingress.",
    ["source"],
    buckets=_LATENCY_BUCKETS,
)
SIGNATURE_FAILURES = Counter(
    "courier_gateway_signature_failures_total",
    "Requests refused by signature verification, by source and failed check.",
    ["source", "reason"],
)
ENQUEUED = Counter(
    "courier_gateway_events_enqueued_total",
    "Events written to the stream by the ingress.",
    ["source"],
)
LEGACY_SIGNATURES = Counter(
    "courier_gateway_legacy_signatures_total",
    "Events accepted with the weaker legacy-body scheme, by source.",
    ["source"],
)

# Both roles.
DUPLICATES = Counter(
    "courier_gateway_duplicates_total",
    "Duplicates suppressed by the intake hint (stage=intake) or the worker's ledger (ledger).",
    ["stage"],
)
BUILD_INFO = Gauge(
    "courier_gateway_build_info",
    "Always 1; the version and role as labels.",
    ["version", "role"],
    multiprocess_mode="max",
)

# Worker.
WORKER_OUTCOMES = Counter(
    "courier_gateway_worker_outcomes_total",
    "Job attempts by outcome: processed, duplicate, retried, deferred, dead_lettered.",
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
    "courier_gateway_queue_lag",
    "Stream entries not yet delivered to the workers plus delivered but unacknowledged.",
    ["state"],
    multiprocess_mode="max",
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


def render() -> bytes:
    """The exposition text: aggregated over processes in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def declare_build(role: str) -> None:
    """Set the build-info gauge for this process's role."""
    BUILD_INFO.labels(version=__version__, role=role).set(1)
