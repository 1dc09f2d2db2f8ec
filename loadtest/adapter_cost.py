"""Micro-benchmark: the CPU cost of the adapters, per event, on this machine.

    .venv/bin/python -m loadtest.adapter_cost [--seconds 1.0] [--json]

For each built-in adapter, its documented sample is verified (signed the provider's way) and
mapped many times in one process; the fastest of several rounds (CPU time of this process, the
round least disturbed by other load) is reported per request and
per event: ``map`` is JSON parsing, ignore rules, splitting and mapping (the target is at most
30 µs per event for the built-ins); ``verify`` is the signature or token check per request. A
micro-benchmark and not a timed unit test: the machine is shared, so the figure is a measurement
to record (docs/benchmarks.md), not a pass/fail.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from courier_gateway.adapters import Secret, builtin_registry
from courier_gateway.adapters.signing import sign_request

__all__ = ["main", "measure"]

_SECRET = "benchmark-secret-0001"
_WHSEC = "whsec_" + base64.b64encode(b"benchmark-key-32-bytes-long-0000").decode()
_CANONICAL_BODY = (
    b'{"eventId":"evt_1","eventType":"shipment.status.updated","occurredAt":"2026-01-01T10:00:00Z",'
    b'"payload":{"shipmentId":"shp_1","orderId":"ord_1","status":"in_transit"}}'
)


def _per_call(function: Callable[[], Any], seconds: float, rounds: int = 5) -> float:
    """Seconds per call: the fastest of ``rounds`` rounds (the least disturbed by other load)."""
    calls = 1
    while True:  # calibrate: enough calls for a round to last its share
        started = time.process_time()
        for _ in range(calls):
            function()
        elapsed = time.process_time() - started
        if elapsed >= seconds / rounds / 4:
            break
        calls *= 2
    per_round = max(1, int(calls * (seconds / rounds) / max(elapsed, 1e-9)))
    results = []
    for _ in range(rounds):
        started = time.process_time()
        for _ in range(per_round):
            function()
        results.append((time.process_time() - started) / per_round)
    return min(results)


def measure(seconds: float) -> list[dict[str, Any]]:
    """One row per built-in adapter: events per sample, µs per request and per event."""
    rows = []
    for adapter in builtin_registry():
        body = adapter.document.sample.encode() if adapter.document.sample else _CANONICAL_BODY
        secret = _WHSEC if adapter.name == "standard-webhooks" else _SECRET
        signed = sign_request(adapter, body, secret, now=int(time.time()))
        request = signed.inbound(body)
        keys = [Secret("k1", secret)]
        events = len(adapter.map_body(body, source="bench", default_source="courier").events)

        def verify() -> None:
            adapter.verify(request, keys, now=time.time(), tolerance=300)  # noqa: B023

        def map_body() -> None:
            adapter.map_body(body, source="bench", default_source="courier")  # noqa: B023

        map_seconds = _per_call(map_body, seconds)
        verify_seconds = _per_call(verify, seconds / 2)
        rows.append(
            {
                "adapter": adapter.name,
                "format": adapter.document.format,
                "events": events,
                "bodyBytes": len(body),
                "mapUsPerRequest": round(map_seconds * 1e6, 1),
                "mapUsPerEvent": round(map_seconds * 1e6 / max(events, 1), 1),
                "verifyUsPerRequest": round(verify_seconds * 1e6, 1),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    """Print the table (or JSON)."""
    parser = argparse.ArgumentParser(prog="python -m loadtest.adapter_cost", description=__doc__)
    parser.add_argument("--seconds", type=float, default=1.0, help="time per adapter (1.0)")
    parser.add_argument("--json", action="store_true", help="print JSON rows")
    args = parser.parse_args(argv)
    rows = measure(args.seconds)
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    line = "{:<18} {:>6} {:>6} {:>11} {:>13} {:>10}"
    print(line.format("adapter", "events", "bytes", "map µs/req", "map µs/event", "verify µs"))
    for row in rows:
        keys = ("adapter", "events", "bodyBytes", "mapUsPerRequest", "mapUsPerEvent")
        print(line.format(*(row[key] for key in keys), row["verifyUsPerRequest"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
