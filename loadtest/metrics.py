"""Reading the worker's Prometheus ``/metrics``: counter totals and histogram quantiles."""

from __future__ import annotations

import math
from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

__all__ = ["END_TO_END", "STORE_OPERATIONS", "Scrape", "difference", "quantile", "scrape"]

STORE_OPERATIONS = "courier_gateway_store_operations_total"
END_TO_END = "courier_gateway_end_to_end_seconds"


@dataclass(frozen=True)
class Scrape:
    """One scrape: every sample as (name, labels, value)."""

    samples: tuple[tuple[str, tuple[tuple[str, str], ...], float], ...]

    def total(self, name: str, **labels: str) -> float:
        """Sum of the samples named ``name`` whose labels include ``labels``."""
        wanted = set(labels.items())
        return sum(
            value
            for sample, sample_labels, value in self.samples
            if sample == name and wanted <= set(sample_labels)
        )

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """Samples named ``name`` summed per value of ``label``."""
        result: dict[str, float] = {}
        for sample, sample_labels, value in self.samples:
            if sample == name:
                key = dict(sample_labels).get(label, "")
                result[key] = result.get(key, 0.0) + value
        return result

    def buckets(self, histogram: str) -> list[tuple[float, float]]:
        """Cumulative (upper bound, count) of a histogram, summed over its other labels."""
        counts: dict[float, float] = {}
        for sample, sample_labels, value in self.samples:
            if sample == f"{histogram}_bucket":
                bound = float(dict(sample_labels)["le"])
                counts[bound] = counts.get(bound, 0.0) + value
        return sorted(counts.items())


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus-style ``histogram_quantile``: linear within the bucket; None when empty."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


def difference(
    after: list[tuple[float, float]], before: list[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Bucket counts of ``after`` minus ``before`` (same bounds)."""
    earlier = dict(before)
    return [(bound, count - earlier.get(bound, 0.0)) for bound, count in after]


def scrape(url: str, timeout: float = 5.0) -> Scrape:
    """Fetch and parse ``url`` (a ``/metrics`` endpoint)."""
    text = httpx.get(url, timeout=timeout).text
    samples = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.append((sample.name, tuple(sorted(sample.labels.items())), float(sample.value)))
    return Scrape(tuple(samples))
