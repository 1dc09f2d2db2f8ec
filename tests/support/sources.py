"""The shared test ingress's sources: one per scheme, plus a rate-limited one."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml

__all__ = ["COURIER_SECRET", "DHL_SECRET", "LEGACY_SECRET", "LIMITED_SECRET", "write_sources"]

COURIER_SECRET = "courier-secret-0001"
DHL_SECRET = "whsec_" + base64.b64encode(b"dhl-test-key-32-bytes-long-00000").decode()
LEGACY_SECRET = "legacy-secret-0001"
LIMITED_SECRET = "limited-secret-0001"


def write_sources(path: Path, *, extra: dict[str, object] | None = None) -> Path:
    """Write a sources file with ``courier`` (v1), ``dhl`` (standard-webhooks), ``legacy``
    (legacy-body opt-in) and ``fedex`` (v1, 5/s with a burst of 5)."""
    sources: dict[str, object] = {
        "courier": {"scheme": "v1", "secrets": [{"id": "k1", "value": COURIER_SECRET}]},
        "dhl": {"scheme": "standard-webhooks", "secrets": [{"id": "dhl-1", "value": DHL_SECRET}]},
        "legacy": {"scheme": "legacy-body", "secrets": [{"id": "old", "value": LEGACY_SECRET}]},
        "fedex": {
            "scheme": "v1",
            "secrets": [{"id": "fx", "value": LIMITED_SECRET}],
            "rateLimit": {"perSecond": 5, "burst": 5},
        },
    }
    sources.update(extra or {})
    path.write_text(yaml.safe_dump({"sources": sources}))
    return path
