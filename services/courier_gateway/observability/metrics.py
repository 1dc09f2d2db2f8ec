"""Prometheus metrics of the intake and both roles, prefix ``courier_gateway_``.

The worker's own metrics live in :mod:`courier_gateway.observability.worker_metrics`, which the
ingress never imports, so an ingress never exports worker gauges as zeros. The catalogue is in
``docs/observability.md``.

Label values are bounded: sources are configured names (``unknown`` otherwise), outcomes and
reasons are fixed vocabularies, hosts come from configuration. No event ids, no raw paths.

With several ingress processes, prometheus-client's multiprocess mode is used: the serving
command points ``PROMETHEUS_MULTIPROC_DIR`` at a fresh directory *before* this module is
imported (the value class is chosen at import), and ``/metrics`` aggregates every process's
files, so one scrape reports one consistent set.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from courier_gateway import __version__

# No ``*_created`` series: they double every counter's and histogram's series count for a
# timestamp no dashboard or alert reads (rate() copes with resets on its own).
disable_created_metrics()  # type: ignore[no-untyped-call]

__all__ = [
    "ADAPTER_ITEMS",
    "BUILD_INFO",
    "DUPLICATES",
    "ENQUEUED",
    "INTAKE_LATENCY",
    "INTAKE_REQUESTS",
    "LEGACY_SIGNATURES",
    "SIGNATURE_FAILURES",
    "DeprecatedNames",
    "declare_build",
    "prime_intake",
    "render",
]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

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
ADAPTER_ITEMS = Counter(
    "courier_gateway_adapter_items_total",
    "Items of provider-adapter requests by source and outcome: mapped, unmapped (queued for an"
    " UNMAPPED dead letter) or ignored (acknowledged, nothing queued).",
    ["source", "outcome"],
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


class DeprecatedNames(Collector):
    """Re-exports renamed metrics under their former names for one release (see CHANGELOG.md).

    ``renamed`` maps each new metric (its collector) to its old name; the old series carry the
    same labels and values, and their help text says which name replaces them.
    """

    def __init__(self, renamed: dict[str, tuple[Collector, str]]) -> None:
        self._renamed = renamed

    def collect(self) -> Iterator[Metric]:
        """The old names' families, copied from the new metrics."""
        for old, (source, new) in self._renamed.items():
            for family in source.collect():
                alias = Metric(
                    old, f"DEPRECATED: renamed {new}. {family.documentation}", family.type
                )
                alias.samples = [
                    sample._replace(name=old + sample.name.removeprefix(new))
                    for sample in family.samples
                ]
                yield alias

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the families are only known when collected."""
        return []


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


#: Every outcome the intake counts; primed at start so rates see their first increments.
INTAKE_OUTCOMES = (
    "accepted",
    "duplicate",
    "invalid_payload",
    "invalid_signature",
    "unsupported_media_type",
    "payload_too_large",
    "rate_limited",
    "intake_unavailable",
)


def prime_intake(sources: list[str]) -> None:
    """Create the intake's series at zero for every configured source.

    A labelled series that appears only at its first increment makes ``rate()`` miss that
    increment; creating them up front makes the first event count.
    """
    for source in sources:
        for outcome in INTAKE_OUTCOMES:
            INTAKE_REQUESTS.labels(source, outcome)
        INTAKE_LATENCY.labels(source)
        ENQUEUED.labels(source)
    INTAKE_REQUESTS.labels("unknown", "unknown_source")
    INTAKE_REQUESTS.labels("unknown", "not_found")
    DUPLICATES.labels("intake")
