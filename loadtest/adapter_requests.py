"""Pre-signed provider requests for wrk: AfterShip single events and Ship24 batches.

Each request is the provider's documented sample shape with fresh ids, signed the provider's way
by the adapter's own signing code (``courier_gateway.adapters.signing``): AfterShip with its body
HMAC, Ship24 with its bearer secret. Neither signs a timestamp, so a file stays valid however long
it waits. Statuses are taken from the non-final ones, so no event is an invalid transition.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from courier_gateway.adapters import builtin_registry
from courier_gateway.adapters.signing import sign_request
from loadtest.requests import write_lua

__all__ = ["AdapterMix", "AdapterRequests", "generate_adapter_requests"]

_AFTERSHIP_TAGS = ("InfoReceived", "InTransit", "OutForDelivery", "AvailableForPickup")
_SHIP24_MILESTONES = ("info_received", "in_transit", "out_for_delivery", "available_for_pickup")


@dataclass(frozen=True)
class AdapterMix:
    """``requests`` requests for ``adapter`` (``aftership`` or ``ship24``) posted to ``source``;
    a Ship24 request holds ``trackings`` trackings of ``events`` events each."""

    adapter: str
    source: str
    secret: str
    requests: int
    trackings: int = 1
    events: int = 1
    run_id: str = "run"
    seed: int = 1
    host: str = "127.0.0.1"


@dataclass(frozen=True)
class AdapterRequests:
    """A written request file and what is in it."""

    path: Path
    requests: int
    events: int
    mean_body_bytes: float

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the bench record."""
        return {
            "requests": self.requests,
            "events": self.events,
            "meanBodyBytes": round(self.mean_body_bytes, 1),
        }


def _aftership(mix: AdapterMix, index: int, rng: random.Random) -> dict[str, Any]:
    tag = rng.choice(_AFTERSHIP_TAGS)
    return {
        "event": "tracking_update",
        "event_id": f"{mix.run_id}-{index:08d}",
        "is_tracking_first_tag": False,
        "ts": 1_780_000_000 + index,
        "msg": {
            "id": f"as{mix.run_id}{index:08d}",
            "tracking_number": f"AS{mix.run_id.upper()}{index // 3:08d}",
            "slug": "usps",
            "tag": tag,
            "subtag": f"{tag}_001",
            "subtag_message": tag,
            "order_id": f"ord_{mix.run_id}_{index // 3:08d}",
            "checkpoints": [
                {
                    "checkpoint_time": "2026-05-01T10:00:00",
                    "message": "Arrived at facility",
                    "tag": tag,
                    "location": "MEMPHIS, TN, USA",
                }
            ],
        },
    }


def _ship24(mix: AdapterMix, index: int, rng: random.Random) -> dict[str, Any]:
    trackings = []
    for tracking in range(mix.trackings):
        number = f"S24{mix.run_id.upper()}{index:07d}{tracking:02d}"
        events = [
            {
                "eventId": f"{mix.run_id}-{index:07d}-{tracking:02d}-{event:02d}",
                "trackingNumber": number,
                "status": "On the way",
                "occurrenceDatetime": f"2026-05-01T{10 + event % 10:02d}:00:00",
                "location": "New York, US",
                "courierCode": "us-post",
                "statusCode": "transit",
                "statusMilestone": rng.choice(_SHIP24_MILESTONES),
            }
            for event in range(mix.events)
        ]
        trackings.append(
            {
                "metadata": {"messageId": f"{mix.run_id}-{index}"},
                "tracker": {"trackerId": f"t-{index}-{tracking}", "trackingNumber": number},
                "events": events,
            }
        )
    return {"trackings": trackings}


def generate_adapter_requests(mix: AdapterMix, path: Path) -> AdapterRequests:
    """Write the Lua request file for ``mix``."""
    adapter = builtin_registry().get(mix.adapter)
    if adapter is None:
        raise ValueError(f"no built-in adapter {mix.adapter!r}")
    build = {"aftership": _aftership, "ship24": _ship24}[mix.adapter]
    rng = random.Random(mix.seed)
    requests: list[bytes] = []
    total = 0
    sizes = 0
    for index in range(mix.requests):
        body = orjson.dumps(build(mix, index, rng))
        signed = sign_request(adapter, body, mix.secret, now=int(time.time()))
        lines = [
            f"POST /v1/events/{mix.source} HTTP/1.1",
            f"Host: {mix.host}",
            f"Content-Length: {len(body)}",
            *(f"{name}: {value}" for name, value in signed.headers.items()),
        ]
        requests.append(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        total += mix.trackings * mix.events if mix.adapter == "ship24" else 1
        sizes += len(body)
    write_lua(path, requests, f"{len(requests)} {mix.adapter} requests")
    return AdapterRequests(path, len(requests), total, sizes / max(1, len(requests)))
