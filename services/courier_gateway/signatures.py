"""Webhook signatures: producing and verifying the three schemes, over the raw body bytes.

``v1`` (the default) signs ``"{timestamp}.{body}"``, so the freshness check cannot be bypassed by
editing the timestamp header, which the original gateway allowed. ``standard-webhooks`` follows
the Standard Webhooks specification. ``legacy-body`` is the original's body-only HMAC: a source
must opt in to it, because a captured request can be re-sent with a fresh timestamp; such
re-sends carry the same body, so the intake's duplicate hint and the worker's ledger absorb them.

Verification compares with :func:`hmac.compare_digest` against every active key (rotation) and
returns the id of the key that matched. The ingress verifies through the sources' adapters
(``adapters/builtin/v1.yaml`` and its siblings declare these same rules); :func:`verify` stays as
the reference the tests hold the adapters to, request by generated request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable, Sequence
from typing import Any

from courier_gateway.config.sources import Key, Scheme

__all__ = [
    "ALGORITHMS",
    "SignatureError",
    "sign",
    "verify",
]

ALGORITHMS: dict[str, Callable[..., Any]] = {
    "hmac-sha256": hashlib.sha256,
    "hmac-sha512": hashlib.sha512,
}
_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_WEBHOOK_ID = re.compile(r"^[\x21-\x7e]{1,256}$")
_HEX = re.compile(r"^[0-9a-fA-F]+$")

HeaderGetter = Callable[[str], Sequence[str]]


class SignatureError(Exception):
    """Verification failed; ``reason`` is a short code for metrics, ``str()`` says which check."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def sign(
    scheme: Scheme,
    body: bytes,
    secret: bytes,
    *,
    timestamp: int,
    webhook_id: str | None = None,
    algorithm: str = "hmac-sha256",
) -> dict[str, str]:
    """Return the headers that sign ``body`` under ``scheme`` with the raw key ``secret``."""
    if scheme is Scheme.STANDARD_WEBHOOKS:
        if webhook_id is None:
            raise ValueError("standard-webhooks needs a webhook id")
        digest = hmac.new(secret, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256)
        return {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": "v1," + base64.b64encode(digest.digest()).decode(),
        }
    hash_function = ALGORITHMS[algorithm]
    signed = body if scheme is Scheme.LEGACY_BODY else f"{timestamp}.".encode() + body
    return {
        "x-signature": hmac.new(secret, signed, hash_function).hexdigest(),
        "x-signature-timestamp": str(timestamp),
        "x-signature-algorithm": algorithm,
    }


def verify(
    scheme: Scheme,
    keys: Sequence[Key],
    headers: HeaderGetter,
    body: bytes,
    *,
    now: float,
    tolerance_seconds: int,
) -> str:
    """Check a request's signature; return the matching key id or raise :class:`SignatureError`."""
    if scheme is Scheme.STANDARD_WEBHOOKS:
        return _verify_standard_webhooks(keys, headers, body, now=now, tolerance=tolerance_seconds)
    return _verify_x_signature(scheme, keys, headers, body, now=now, tolerance=tolerance_seconds)


def _single(headers: HeaderGetter, name: str, *, required: bool = True) -> str | None:
    values = headers(name)
    if not values:
        if required:
            raise SignatureError("missing_header", f"missing header {name}")
        return None
    if len(values) > 1:
        raise SignatureError("duplicate_header", f"header {name} was sent more than once")
    return values[0].strip()


def _timestamp(headers: HeaderGetter, name: str, now: float, tolerance: int) -> int:
    text = _single(headers, name)
    assert text is not None
    if not _TIMESTAMP.match(text):
        raise SignatureError("malformed_timestamp", f"header {name} must be unix seconds")
    timestamp = int(text)
    skew = now - timestamp
    if skew > tolerance:
        raise SignatureError(
            "stale_timestamp",
            f"header {name} is {int(skew)} s in the past; the tolerance is {tolerance} s",
        )
    if -skew > tolerance:
        raise SignatureError(
            "future_timestamp",
            f"header {name} is {int(-skew)} s in the future; the tolerance is {tolerance} s",
        )
    return timestamp


def _verify_x_signature(
    scheme: Scheme,
    keys: Sequence[Key],
    headers: HeaderGetter,
    body: bytes,
    *,
    now: float,
    tolerance: int,
) -> str:
    signature = _single(headers, "x-signature")
    assert signature is not None
    algorithm = _single(headers, "x-signature-algorithm", required=False) or "hmac-sha256"
    hash_function = ALGORITHMS.get(algorithm.lower())
    if hash_function is None:
        raise SignatureError(
            "unsupported_algorithm",
            f"header x-signature-algorithm must be one of {', '.join(ALGORITHMS)}",
        )
    timestamp = _timestamp(headers, "x-signature-timestamp", now, tolerance)
    expected_length = hash_function().digest_size * 2
    if len(signature) != expected_length or not _HEX.match(signature):
        raise SignatureError(
            "malformed_signature",
            f"header x-signature must be {expected_length} hex digits for {algorithm.lower()}",
        )
    given = bytes.fromhex(signature)
    signed = body if scheme is Scheme.LEGACY_BODY else f"{timestamp}.".encode() + body
    for key in keys:
        if hmac.compare_digest(hmac.new(key.secret, signed, hash_function).digest(), given):
            return key.id
    if scheme is Scheme.V1 and any(
        hmac.compare_digest(hmac.new(key.secret, body, hash_function).digest(), given)
        for key in keys
    ):
        raise SignatureError(
            "legacy_not_allowed",
            "signature covers the body only (legacy-body scheme), which this source does not"
            " accept; sign '{timestamp}.{body}' (scheme v1)",
        )
    what = "body" if scheme is Scheme.LEGACY_BODY else "timestamp and body"
    raise SignatureError(
        "mismatch", f"x-signature does not match the {what} under any active key of this source"
    )


def _verify_standard_webhooks(
    keys: Sequence[Key], headers: HeaderGetter, body: bytes, *, now: float, tolerance: int
) -> str:
    webhook_id = _single(headers, "webhook-id")
    assert webhook_id is not None
    if not _WEBHOOK_ID.match(webhook_id):
        raise SignatureError(
            "malformed_header", "header webhook-id must be 1-256 printable characters"
        )
    timestamp = _timestamp(headers, "webhook-timestamp", now, tolerance)
    header = _single(headers, "webhook-signature")
    assert header is not None
    candidates: list[bytes] = []
    for part in header.split():
        version, _, encoded = part.partition(",")
        if version != "v1":
            continue
        try:
            candidates.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    if not candidates:
        raise SignatureError(
            "malformed_signature", "header webhook-signature has no 'v1,<base64>' signature"
        )
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    for key in keys:
        digest = hmac.new(key.secret, signed, hashlib.sha256).digest()
        if any(hmac.compare_digest(digest, candidate) for candidate in candidates):
            return key.id
    raise SignatureError(
        "mismatch",
        "webhook-signature does not match the id, timestamp and body under any active key",
    )
