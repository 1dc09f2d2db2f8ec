"""After a run: did every accepted event arrive, and how long did it take?

With the worker running, every queued event (202 responses minus duplicates) must reach a
terminal state in the worker's ledger (``processed_events`` with status ``processed`` or
``dead_lettered``); events lost = queued - terminal, and it must be 0. The time from
``receivedAt`` (set at intake, kept in each shipment's history entry and in dead letters) to the
terminal mark (``processedAt`` / ``deadLetteredAt``) gives the end-to-end percentiles; the worker's
``courier_gateway_end_to_end_seconds`` histogram gives a second, coarser view.

Without a worker, every queued event must be on the Redis stream instead: lost = queued - XLEN.

The embedded store returns some ``$set`` datetimes as ISO text, so both forms are parsed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis
from pymongo import MongoClient

from loadtest.metrics import END_TO_END, Scrape, difference, quantile

__all__ = [
    "EndToEnd",
    "StreamCheck",
    "check_stream",
    "histogram_percentiles",
    "partition_lengths",
    "percentiles",
    "terminal_counts",
    "wait_terminal",
]

TERMINAL = ("processed", "dead_lettered")


def to_datetime(value: Any) -> datetime | None:
    """A stored time (datetime or ISO text) as an aware UTC datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str) and value:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def percentiles(values: list[float]) -> dict[str, float]:
    """p50, p95, p99 and max (nearest rank) of ``values``; empty dict when there are none."""
    if not values:
        return {}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.5) - 1))]

    return {"p50": rank(0.50), "p95": rank(0.95), "p99": rank(0.99), "max": ordered[-1]}


def histogram_percentiles(before: Scrape | None, after: Scrape) -> dict[str, float]:
    """p50/p95/p99 (ms) of the worker's end-to-end histogram between two scrapes."""
    buckets = after.buckets(END_TO_END)
    if before is not None:
        buckets = difference(buckets, before.buckets(END_TO_END))
    result = {}
    for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        value = quantile(buckets, q)
        if value is not None:
            result[name] = round(value * 1000, 1)
    return result


def _client(uri: str) -> MongoClient[dict[str, Any]]:
    return MongoClient(uri, tz_aware=True, serverSelectionTimeoutMS=5000)


def terminal_counts(uri: str, database: str) -> dict[str, int]:
    """Ledger records per status (processing, processed, dead_lettered)."""
    client = _client(uri)
    try:
        counts = {"processing": 0, "processed": 0, "dead_lettered": 0}
        for status in counts:
            counts[status] = client[database]["processed_events"].count_documents(
                {"status": status}
            )
        return counts
    finally:
        client.close()


@dataclass
class EndToEnd:
    """The outcome of waiting for the worker."""

    queued: int
    processed: int = 0
    dead_lettered: int = 0
    waited_s: float = 0.0
    complete: bool = False
    first_claim: datetime | None = None
    last_terminal: datetime | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    histogram_ms: dict[str, float] = field(default_factory=dict)

    @property
    def terminal(self) -> int:
        """Processed plus dead-lettered."""
        return self.processed + self.dead_lettered

    @property
    def lost(self) -> int:
        """Queued events without a terminal state (0 when all arrived)."""
        return max(0, self.queued - self.terminal)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "queued": self.queued,
            "terminal": self.terminal,
            "processed": self.processed,
            "deadLettered": self.dead_lettered,
            "lost": self.lost,
            "complete": self.complete,
            "waitedSeconds": round(self.waited_s, 2),
            "latencyMs": self.latency_ms,
            "workerHistogramMs": self.histogram_ms,
        }


def wait_terminal(
    uri: str,
    database: str,
    queued: int,
    *,
    timeout: float = 600.0,
    stall_timeout: float = 60.0,
    interval: float = 0.5,
) -> EndToEnd:
    """Poll the ledger until ``queued`` records are terminal, or no progress for a while."""
    started = time.monotonic()
    result = EndToEnd(queued=queued)
    last_progress, last_terminal = started, -1
    client = _client(uri)
    try:
        ledger = client[database]["processed_events"]
        while True:
            terminal = ledger.count_documents({"status": {"$in": list(TERMINAL)}})
            now = time.monotonic()
            if terminal != last_terminal:
                last_progress, last_terminal = now, terminal
            if terminal >= queued:
                result.complete = True
                break
            if now - started > timeout or now - last_progress > stall_timeout:
                break
            time.sleep(interval)
    finally:
        client.close()
    result.waited_s = time.monotonic() - started
    counts = terminal_counts(uri, database)
    result.processed, result.dead_lettered = counts["processed"], counts["dead_lettered"]
    _read_latencies(uri, database, result)
    return result


def _read_latencies(uri: str, database: str, result: EndToEnd) -> None:
    """receivedAt → terminal per event, from the store; and the drain window's two ends."""
    client = _client(uri)
    try:
        db = client[database]
        received: dict[str, datetime] = {}
        for shipment in db["active_shipments"].find({}, {"history": 1}):
            for entry in (shipment.get("history") or {}).values():
                moment = to_datetime(entry.get("receivedAt"))
                if moment is not None:
                    received[entry["idempotencyKey"]] = moment
        latencies: list[float] = []
        claims: list[datetime] = []
        ends: list[datetime] = []
        ledger = db["processed_events"].find(
            {"status": "processed"}, {"idempotencyKey": 1, "processedAt": 1, "createdAt": 1}
        )
        for record in ledger:
            end = to_datetime(record.get("processedAt"))
            claim = to_datetime(record.get("createdAt"))
            if claim is not None:
                claims.append(claim)
            if end is None:
                continue
            ends.append(end)
            start = received.get(record["idempotencyKey"])
            if start is not None:
                latencies.append((end - start).total_seconds() * 1000)
        letters = db["dead_letter_events"].find({}, {"receivedAt": 1, "deadLetteredAt": 1})
        for letter in letters:
            start, end = (
                to_datetime(letter.get("receivedAt")),
                to_datetime(letter.get("deadLetteredAt")),
            )
            if start is not None and end is not None:
                ends.append(end)
                latencies.append((end - start).total_seconds() * 1000)
        result.latency_ms = {key: round(value, 1) for key, value in percentiles(latencies).items()}
        result.first_claim = min(claims, default=None)
        result.last_terminal = max(ends, default=None)
    finally:
        client.close()


@dataclass(frozen=True)
class StreamCheck:
    """Without a worker: the stream must hold every queued event."""

    queued: int
    entries: int

    @property
    def lost(self) -> int:
        """Queued events missing from the stream."""
        return max(0, self.queued - self.entries)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"queued": self.queued, "streamEntries": self.entries, "lost": self.lost}


def check_stream(redis_url: str, stream: str, queued: int, *, baseline: int = 0) -> StreamCheck:
    """Compare XLEN of the stream (minus ``baseline`` entries already there) with ``queued``."""
    client = redis.Redis.from_url(redis_url)
    try:
        entries = int(client.xlen(stream)) - baseline
    finally:
        client.close()
    return StreamCheck(queued, entries)


def partition_lengths(cluster_url: str, streams: list[str]) -> dict[str, int]:
    """XLEN of each partition stream on a Redis Cluster (0 for a stream never written)."""
    client = redis.RedisCluster.from_url(cluster_url)
    try:
        return {stream: int(client.xlen(stream)) for stream in streams}
    finally:
        client.close()
