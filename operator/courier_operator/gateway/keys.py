"""Signing keys: one Secret per source, rotated on a schedule or on request.

A source's Secret holds one entry per key (entry name = key id, the ingress's key file name).
Its annotations record the rotation state, so that the state survives operator restarts and
every replica of the operator reads the same truth:

- ``active-key``: the key couriers should sign with now;
- ``previous-key`` and ``previous-expires-at``: the key it replaced, accepted until then;
- ``rotated-at``: when the active key was made;
- ``rotate-token``: the last manual-rotation request handled.

A rotation adds the new key before anything else changes; the previous key is removed only
after the overlap. The ingress accepts every key present, so during the overlap a request
signed with either key is accepted.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from courier_operator.gateway.spec import SourceSpec
from courier_operator.gateway.workloads import source_secret_name
from courier_operator.objects import MANAGED_BY, owner_reference

__all__ = [
    "ROTATE_ANNOTATION",
    "KeyChange",
    "KeyStatus",
    "generate_secret",
    "iso",
    "plan_keys",
]

_PREFIX = "gateway.courier.dev/"
ACTIVE = _PREFIX + "active-key"
PREVIOUS = _PREFIX + "previous-key"
PREVIOUS_EXPIRES = _PREFIX + "previous-expires-at"
ROTATED_AT = _PREFIX + "rotated-at"
ROTATE_TOKEN = _PREFIX + "rotate-token"
_STATE = frozenset({ACTIVE, PREVIOUS, PREVIOUS_EXPIRES, ROTATED_AT, ROTATE_TOKEN})
# On the CourierGateway: any new value rotates every source's key now.
ROTATE_ANNOTATION = _PREFIX + "rotate-keys"


def iso(moment: datetime, *, precise: bool = False) -> str:
    """RFC 3339 in UTC with a Z, as Kubernetes writes times (``precise``: with milliseconds)."""
    utc = moment.astimezone(UTC)
    if precise:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    return utc.strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def generate_secret(scheme: str) -> str:
    """A new random key in the form the scheme reads (Standard Webhooks: ``whsec_`` + base64)."""
    raw = secrets.token_bytes(32)
    if scheme == "standard-webhooks":
        return "whsec_" + base64.b64encode(raw).decode()
    return secrets.token_urlsafe(32)


def _key_id(now: datetime) -> str:
    # Sorts by creation time; the suffix keeps two rotations in one second apart.
    return f"k{now.astimezone(UTC):%Y%m%d%H%M%S}-{secrets.token_hex(2)}"


@dataclass(frozen=True, slots=True)
class KeyStatus:
    """What the CourierGateway status shows for one source."""

    name: str
    secret_name: str
    active_key_id: str | None
    previous_key_id: str | None
    previous_expires_at: datetime | None
    last_rotation: datetime | None
    next_rotation: datetime | None

    def as_status(self) -> dict[str, Any]:
        """The ``status.signing.sources[]`` entry."""
        entry: dict[str, Any] = {"name": self.name, "secretName": self.secret_name}
        if self.active_key_id:
            entry["activeKeyId"] = self.active_key_id
        if self.previous_key_id:
            entry["previousKeyId"] = self.previous_key_id
        if self.previous_expires_at:
            entry["previousKeyExpiresAt"] = iso(self.previous_expires_at)
        if self.last_rotation:
            entry["lastRotationTime"] = iso(self.last_rotation)
        if self.next_rotation:
            entry["nextRotationTime"] = iso(self.next_rotation)
        return entry


@dataclass(frozen=True, slots=True)
class KeyChange:
    """The source's Secret as it should be after one change, and why (the reason becomes an
    Event). Applied whole: keys and annotations left out of it are removed."""

    manifest: dict[str, Any]
    reason: str
    message: str


def _manifest(
    gateway: dict[str, Any],
    source: SourceSpec,
    annotations: dict[str, str],
    data: dict[str, Any],
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": source_secret_name(gateway, source.name),
            "namespace": gateway["metadata"]["namespace"],
            "labels": {
                "app.kubernetes.io/name": "courier-gateway",
                "app.kubernetes.io/instance": gateway["metadata"]["name"],
                "app.kubernetes.io/component": "signing-keys",
                "app.kubernetes.io/managed-by": MANAGED_BY,
                "gateway.courier.dev/source": source.name,
            },
            # Only the rotation state: annotations others put on the Secret stay theirs.
            "annotations": {key: value for key, value in annotations.items() if key in _STATE},
            "ownerReferences": [owner_reference(gateway)],
        },
        "data": dict(data),
    }


def _status(
    source: SourceSpec, name: str, annotations: dict[str, str], data: dict[str, Any]
) -> KeyStatus:
    rotated = _parse(annotations.get(ROTATED_AT))
    previous = annotations.get(PREVIOUS)
    enabled = source.rotation.enabled
    return KeyStatus(
        name=source.name,
        secret_name=name,
        active_key_id=annotations.get(ACTIVE),
        previous_key_id=previous if previous and previous in data else None,
        previous_expires_at=_parse(annotations.get(PREVIOUS_EXPIRES)) if previous else None,
        last_rotation=rotated,
        next_rotation=rotated + source.rotation.interval_delta if enabled and rotated else None,
    )


def plan_keys(
    gateway: dict[str, Any],
    source: SourceSpec,
    secret: dict[str, Any] | None,
    now: datetime,
    manual_token: str | None,
) -> tuple[KeyStatus, list[KeyChange]]:
    """Decide what the source's Secret needs now; return the resulting status and the writes.

    At most one change of each kind per call: retire an expired previous key, then rotate.
    """
    name = source_secret_name(gateway, source.name)
    if secret is None:
        key_id = _key_id(now)
        annotations = {
            ACTIVE: key_id,
            ROTATED_AT: iso(now, precise=True),
            ROTATE_TOKEN: manual_token or "",
        }
        data = {key_id: base64.b64encode(generate_secret(source.scheme).encode()).decode()}
        body = _manifest(gateway, source, annotations, data)
        change = KeyChange(body, "KeyCreated", f"source {source.name}: key {key_id} created")
        return _status(source, name, annotations, data), [change]

    annotations = dict(secret["metadata"].get("annotations") or {})
    data = dict(secret.get("data") or {})
    changes: list[KeyChange] = []

    previous = annotations.get(PREVIOUS)
    expires = _parse(annotations.get(PREVIOUS_EXPIRES))
    if previous and expires is None:
        # Missing or garbled (edited by hand): keep the key a full overlap rather than drop it.
        repaired = iso(now + source.rotation.overlap_delta, precise=True)
        annotations[PREVIOUS_EXPIRES] = repaired
        changes.append(
            KeyChange(
                _manifest(gateway, source, annotations, data),
                "KeyExpiryRepaired",
                f"source {source.name}: previous key {previous} had no valid expiry;"
                f" kept until {repaired}",
            )
        )
    elif previous and expires is not None and now >= expires:
        _merge(data, {previous: None})
        _merge(annotations, {PREVIOUS: None, PREVIOUS_EXPIRES: None})
        changes.append(
            KeyChange(
                _manifest(gateway, source, annotations, data),
                "KeyRetired",
                f"source {source.name}: previous key {previous} removed after the overlap",
            )
        )

    active = annotations.get(ACTIVE)
    rotated = _parse(annotations.get(ROTATED_AT))
    manual = bool(manual_token) and manual_token != annotations.get(ROTATE_TOKEN, "")
    due = source.rotation.enabled and (
        rotated is None or now >= rotated + source.rotation.interval_delta
    )
    lost = not active or active not in data  # the active key was removed by hand
    if manual or due or lost:
        key_id = _key_id(now)
        new_data: dict[str, Any] = {
            key_id: base64.b64encode(generate_secret(source.scheme).encode()).decode()
        }
        new_annotations: dict[str, str | None] = {
            ACTIVE: key_id,
            ROTATED_AT: iso(now, precise=True),
            ROTATE_TOKEN: manual_token or annotations.get(ROTATE_TOKEN, ""),
        }
        if active and active in data:
            # Only one previous key: a rotation inside an overlap (by hand) ends that overlap.
            if annotations.get(PREVIOUS):
                new_data[annotations[PREVIOUS]] = None
            new_annotations[PREVIOUS] = active
            expiry = now + source.rotation.overlap_delta
            new_annotations[PREVIOUS_EXPIRES] = iso(expiry, precise=True)
        why = "requested by annotation" if manual else "interval elapsed" if due else "key lost"
        _merge(annotations, new_annotations)
        _merge(data, new_data)
        changes.append(
            KeyChange(
                _manifest(gateway, source, annotations, data),
                "KeyRotated",
                f"source {source.name}: new key {key_id} ({why});"
                f" previous key {active} valid until {new_annotations.get(PREVIOUS_EXPIRES)}",
            )
        )
    return _status(source, secret["metadata"]["name"], annotations, data), changes


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """Apply a flat change to the local copy (``None`` removes the entry)."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
