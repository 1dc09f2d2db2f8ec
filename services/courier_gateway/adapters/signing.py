"""Signing a request the way a provider does, from the adapter's own ``verify`` section.

Used by ``courier-gateway sign --adapter`` (a working curl per adapter for the README and for
setting up a provider) and by the tests, which thereby also check that every adapter's
verification accepts what its provider sends. For ``anyOf`` the first alternative is used unless
another is chosen; ``source-ip`` checks cannot be signed and are left to the network.
"""

from __future__ import annotations

import base64
import hmac
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from courier_gateway.adapters.adapter import Adapter
from courier_gateway.adapters.keys import decode_key
from courier_gateway.adapters.model import (
    AlgorithmFromHeader,
    AnyOfCheck,
    Check,
    HashCheck,
    HmacCheck,
    SignatureSpec,
    SourceIpCheck,
    TokenCheck,
)
from courier_gateway.adapters.verification import HASHES, Inbound, Template

__all__ = ["SignedRequest", "sign_request"]


@dataclass
class SignedRequest:
    """Headers and query parameters that make a body pass an adapter's verification."""

    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)

    def inbound(self, body: bytes) -> Inbound:
        """The request as verification sees it."""
        headers = {name.lower(): value for name, value in self.headers.items()}
        query = dict(self.query)
        return Inbound(
            body,
            lambda name: [headers[name]] if name in headers else [],
            lambda name: [query[name]] if name in query else [],
        )


def _encode(digest: bytes, encoding: str) -> str:
    if encoding == "hex":
        return digest.hex()
    if encoding == "base64url":
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")
    return base64.b64encode(digest).decode()


def _place(request: SignedRequest, spec: SignatureSpec, value: str) -> None:
    if spec.header is not None:
        request.headers[spec.header.lower()] = value
    else:
        assert spec.query is not None
        request.query[spec.query] = value


def _algorithm(request: SignedRequest, check: HmacCheck | HashCheck) -> Callable[..., Any]:
    if isinstance(check.algorithm, AlgorithmFromHeader):
        name = check.algorithm.default
        request.headers[check.algorithm.header.lower()] = name
        return HASHES[check.algorithm.values[name]]
    return HASHES[check.algorithm]


def _required_headers(request: SignedRequest, check: HmacCheck | HashCheck) -> None:
    if isinstance(check, HmacCheck):
        for required in check.require:
            value = f"msg_{uuid.uuid4().hex}"
            if not re.fullmatch(required.pattern, value):
                value = uuid.uuid4().hex
            request.headers[required.header.lower()] = value


def _sign_digest(
    request: SignedRequest, check: HmacCheck | HashCheck, body: bytes, secret: str, now: int
) -> None:
    key = decode_key(check.key, secret)
    function = _algorithm(request, check)
    _required_headers(request, check)
    template = Template(check.signedPayload, allow_key=isinstance(check, HashCheck))
    for header in template.header_names():
        request.headers.setdefault(header, uuid.uuid4().hex)
    timestamp: str | None = None
    stamp = check.timestamp
    if stamp is not None:
        timestamp = str(now * 1000 if stamp.unit == "milliseconds" else now)
        if stamp.header is not None:
            request.headers[stamp.header.lower()] = timestamp
        elif stamp.query is not None:
            request.query[stamp.query] = timestamp
    signed = template.render(request.inbound(body), timestamp, key)
    if isinstance(check, HmacCheck):
        digest = hmac.new(key, signed, function).digest()
    else:
        digest = function(signed).digest()
    encoded = _encode(digest, check.signature.encoding)
    spec = check.signature
    if spec.format == "kv":
        pairs = [f"{spec.signatureKey}{spec.keySeparator}{encoded}"]
        if stamp is not None and stamp.signatureKey is not None:
            pairs.insert(0, f"{stamp.signatureKey}{spec.keySeparator}{timestamp}")
        _place(request, spec, spec.pairSeparator.join(pairs))
    elif spec.format == "list":
        _place(request, spec, spec.candidatePrefix + encoded)
    else:
        _place(request, spec, spec.prefix + encoded)


def _sign_token(request: SignedRequest, check: TokenCheck, secret: str) -> None:
    token = secret.strip()
    decode_key(check.key, token)  # the same refusal the source's configuration would give
    if check.scheme == "bearer":
        request.headers["authorization"] = f"Bearer {token}"
    elif check.scheme == "basic":
        request.headers["authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
    elif check.header is not None:
        request.headers[check.header.lower()] = check.prefix + token
    else:
        assert check.query is not None
        request.query[check.query] = check.prefix + token


def _sign(
    request: SignedRequest, check: Check, body: bytes, secret: str, *, now: int, choice: int
) -> None:
    if isinstance(check, AnyOfCheck):
        alternative = check.anyOf[min(choice, len(check.anyOf) - 1)]
        _sign(request, alternative, body, secret, now=now, choice=0)
    elif isinstance(check, HmacCheck | HashCheck):
        _sign_digest(request, check, body, secret, now)
    elif isinstance(check, TokenCheck):
        _sign_token(request, check, secret)
    else:
        assert isinstance(check, SourceIpCheck)


def sign_request(
    adapter: Adapter, body: bytes, secret: str, *, now: int, alternative: int = 0
) -> SignedRequest:
    """Sign ``body`` for ``adapter`` with the key text ``secret``; ValueError for a bad key.

    ``alternative`` picks which branch of each ``anyOf`` to use (0: the first).
    """
    request = SignedRequest(headers={"content-type": "application/json"})
    checks: Sequence[Check] = adapter.document.verify
    for check in checks:
        _sign(request, check, body, secret, now=now, choice=alternative)
    return request


def alternatives(adapter: Adapter) -> int:
    """How many ways of signing the adapter offers (the longest ``anyOf``)."""
    widths = [
        len(check.anyOf) for check in adapter.document.verify if isinstance(check, AnyOfCheck)
    ]
    return max(widths, default=1)
