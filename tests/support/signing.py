"""Building events and signed requests for the tests, with the gateway's own signing code."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from courier_gateway.config.sources import Scheme, decode_secret
from courier_gateway.signatures import sign

__all__ = ["event", "signed"]


def event(**overrides: Any) -> dict[str, Any]:
    """A valid event with fresh ids; keyword arguments replace top-level fields."""
    suffix = uuid.uuid4().hex[:12]
    document: dict[str, Any] = {
        "eventId": f"evt_{suffix}",
        "eventType": "shipment.status.updated",
        "occurredAt": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "payload": {
            "shipmentId": f"shp_{suffix}",
            "orderId": f"ord_{suffix}",
            "status": "in_transit",
        },
    }
    document.update(overrides)
    return document


def signed(
    body: bytes | dict[str, Any],
    secret: str,
    *,
    scheme: Scheme = Scheme.V1,
    timestamp: int | None = None,
    algorithm: str = "hmac-sha256",
    webhook_id: str | None = None,
) -> tuple[bytes, dict[str, str]]:
    """``(body bytes, headers)`` signed with ``secret`` as configured for ``scheme``."""
    raw = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
    headers = {"content-type": "application/json"}
    headers.update(
        sign(
            scheme,
            raw,
            decode_secret(scheme, secret),
            timestamp=int(time.time()) if timestamp is None else timestamp,
            webhook_id=webhook_id or f"msg_{uuid.uuid4().hex}",
            algorithm=algorithm,
        )
    )
    return raw, headers
