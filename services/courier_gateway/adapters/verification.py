"""Verification primitives, compiled from an adapter's ``verify`` list; all run on the raw bytes.

- ``hmac``: an HMAC (sha256/sha512/sha1) over a template of request parts — ``{body}``,
  ``{timestamp}``, ``{header:NAME}``, ``{query:NAME}`` and literal text — with the signature taken
  from a header or query parameter: plain (optionally after a prefix such as ``sha256=``), a
  ``t=…,v1=…`` key/value header, or a list of ``v1,<sig>`` candidates; hex, base64 or base64url.
- ``hash``: a plain digest of a template that contains ``{key}`` (17TRACK: ``{body}/{key}``).
- ``token``: a static credential from a header, ``Authorization: Bearer``/``Basic``, or a query
  parameter.
- ``source-ip``: the client address must be in one of the listed networks.
- ``anyOf``: alternatives (a provider offering HMAC or a URL token; several header names).

Every comparison uses :func:`hmac.compare_digest` and tries every active key of the source (key
rotation); the id of the key that matched is returned. A failure raises
:class:`VerificationError` whose message names the failing check without echoing secrets.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from courier_gateway.adapters.keys import Secret
from courier_gateway.adapters.model import (
    AlgorithmFromHeader,
    AnyOfCheck,
    Check,
    HashCheck,
    HmacCheck,
    KeySpec,
    SignatureSpec,
    SourceIpCheck,
    TimestampSpec,
    TokenCheck,
)

__all__ = [
    "HASHES",
    "Inbound",
    "Template",
    "VerificationError",
    "Verifier",
    "client_address",
    "compile_checks",
    "single_value",
]

HASHES: dict[str, Callable[..., Any]] = {
    "sha256": hashlib.sha256,
    "sha512": hashlib.sha512,
    "sha1": hashlib.sha1,
}
_DIGEST_SIZES = {function: function().digest_size for function in HASHES.values()}
ValuesGetter = Callable[[str], Sequence[str]]


def _no_values(_name: str) -> Sequence[str]:
    return ()


@dataclass(slots=True)  # not frozen: built per request, and frozen __init__ costs more
class Inbound:
    """What verification may look at: raw body, headers, query and the client's address."""

    body: bytes
    headers: ValuesGetter
    query: ValuesGetter = _no_values
    client: str | None = None


class VerificationError(Exception):
    """Verification failed: ``reason`` is a short code, ``str()`` names the failing check.

    ``present`` says the credential was there (so it, not a missing alternative, is reported).
    """

    def __init__(self, reason: str, message: str, *, present: bool = True) -> None:
        super().__init__(message)
        self.reason = reason
        self.present = present


class Verifier(Protocol):
    """A compiled check."""

    def verify(
        self, request: Inbound, secrets: Sequence[Secret], *, now: float, tolerance: int
    ) -> str | None:
        """Return the matching key id (``None`` for checks without keys) or raise."""
        ...


def single_value(values: Sequence[str], what: str, *, required: bool = True) -> str | None:
    """The one value of a header or parameter (stripped); missing or repeated is refused."""
    if not values:
        if required:
            raise VerificationError("missing_header", f"missing {what}", present=False)
        return None
    if len(values) > 1:
        raise VerificationError("duplicate_header", f"{what} was sent more than once")
    return values[0].strip()


def _header(request: Inbound, name: str, *, required: bool = True) -> str | None:
    return single_value(request.headers(name), f"header {name}", required=required)


def _query(request: Inbound, name: str, *, required: bool = True) -> str | None:
    value = single_value(request.query(name), f"query parameter {name}", required=required)
    return value


# --- templates --------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([a-z]+)(?::([^{}]+))?\}")


@dataclass(frozen=True, slots=True)
class _Part:
    kind: str  # literal | body | timestamp | header | query | key
    data: bytes = b""  # a literal's bytes
    name: str = ""  # a header's or parameter's name


def _literal(text: str) -> _Part:
    if "{" in text or "}" in text:
        raise ValueError("a lone brace (write '{{' or '}}' for a literal one)")
    return _Part("literal", data=text.encode())


class Template:
    """``{body}``, ``{timestamp}``, ``{header:NAME}``, ``{query:NAME}``, ``{key}`` and text."""

    def __init__(self, text: str, *, allow_key: bool) -> None:
        self.text = text
        parts: list[_Part] = []
        position = 0
        for match in _PLACEHOLDER.finditer(text):
            if match.start() > position:
                parts.append(_literal(text[position : match.start()]))
            position = match.end()
            token = match.group(0)
            if token in {"{{", "}}"}:
                parts.append(_Part("literal", data=token[0].encode()))
                continue
            kind, argument = match.group(1), match.group(2)
            if kind in {"body", "timestamp"} or (kind == "key" and allow_key):
                if argument is not None:
                    raise ValueError(f"{{{kind}}} takes no argument")
                parts.append(_Part(kind))
            elif kind in {"header", "query"} and argument:
                name = argument.strip().lower() if kind == "header" else argument
                parts.append(_Part(kind, name=name))
            else:
                raise ValueError(f"unknown placeholder {token!r}")
        if position < len(text):
            parts.append(_literal(text[position:]))
        self.parts = tuple(parts)

    @property
    def uses_timestamp(self) -> bool:
        """Whether ``{timestamp}`` appears."""
        return any(part.kind == "timestamp" for part in self.parts)

    def header_names(self) -> list[str]:
        """Headers the template reads."""
        return [part.name for part in self.parts if part.kind == "header"]

    def describe(self) -> str:
        """``the timestamp and body`` — what the signature covers, for messages."""
        names = {"body": "body", "timestamp": "timestamp", "key": "key"}
        covered = [
            names.get(part.kind) or part.name for part in self.parts if part.kind != "literal"
        ]
        if len(covered) == 1:
            return f"the {covered[0]}"
        return "the " + ", ".join(covered[:-1]) + " and " + covered[-1]

    def render(self, request: Inbound, timestamp: str | None, key: bytes = b"") -> bytes:
        """The signed bytes for this request."""
        out: list[bytes] = []
        for part in self.parts:
            if part.kind == "literal":
                out.append(part.data)
            elif part.kind == "body":
                out.append(request.body)
            elif part.kind == "timestamp":
                out.append((timestamp or "").encode())
            elif part.kind == "key":
                out.append(key)
            elif part.kind == "header":
                out.append((_header(request, part.name) or "").encode())
            else:
                out.append((_query(request, part.name) or "").encode())
        return b"".join(out)


# --- signatures -------------------------------------------------------------------------------


_HEX = re.compile(r"[0-9a-fA-F]+")


def _decode(text: str, encoding: str) -> bytes:
    if encoding == "hex":
        if not _HEX.fullmatch(text) or len(text) % 2:
            raise ValueError("not hex")
        return bytes.fromhex(text)
    if encoding == "base64url":
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    return base64.b64decode(text, validate=True)


@dataclass(frozen=True, slots=True)
class _Signature:
    candidates: list[bytes]
    parts: dict[str, str]


class _SignatureReader:
    def __init__(self, spec: SignatureSpec) -> None:
        self.spec = spec
        self.where = (
            f"header {spec.header.lower()}" if spec.header else f"query parameter {spec.query}"
        )
        self.header = spec.header.lower() if spec.header else None

    def raw(self, request: Inbound) -> str:
        spec = self.spec
        if self.header is not None:
            value = _header(request, self.header)
        else:
            assert spec.query is not None
            value = _query(request, spec.query)
        assert value is not None
        return value

    def read(self, raw: str, digest_size: int, algorithm_label: str) -> _Signature:
        spec = self.spec
        if spec.format == "kv":
            return self._kv(raw, digest_size)
        if spec.format == "list":
            return self._list(raw)
        if spec.prefix:
            if not raw.startswith(spec.prefix):
                raise VerificationError(
                    "malformed_signature", f"{self.where} must start with '{spec.prefix}'"
                )
            raw = raw[len(spec.prefix) :]
        if spec.encoding == "hex":
            if len(raw) != digest_size * 2 or not _HEX.fullmatch(raw):
                raise VerificationError(
                    "malformed_signature",
                    f"{self.where} must be {digest_size * 2} hex digits for {algorithm_label}",
                )
            return _Signature([bytes.fromhex(raw)], {})
        try:
            decoded = _decode(raw, spec.encoding)
        except (binascii.Error, ValueError):
            decoded = b""
        if len(decoded) != digest_size:
            raise VerificationError(
                "malformed_signature",
                f"{self.where} must be a {spec.encoding} {algorithm_label} digest"
                f" ({digest_size} bytes)",
            )
        return _Signature([decoded], {})

    def _kv(self, raw: str, digest_size: int) -> _Signature:
        spec = self.spec
        parts: dict[str, str] = {}
        candidates: list[bytes] = []
        for pair in raw.split(spec.pairSeparator):
            key, separator, value = pair.strip().partition(spec.keySeparator)
            if not separator:
                continue
            if key == spec.signatureKey:
                try:
                    decoded = _decode(value.strip(), spec.encoding)
                except (binascii.Error, ValueError):
                    continue
                if len(decoded) == digest_size:
                    candidates.append(decoded)
            else:
                parts.setdefault(key, value.strip())
        if not candidates:
            raise VerificationError(
                "malformed_signature",
                f"{self.where} has no '{spec.signatureKey}{spec.keySeparator}<{spec.encoding}>'"
                " signature",
            )
        return _Signature(candidates, parts)

    def _list(self, raw: str) -> _Signature:
        spec = self.spec
        candidates: list[bytes] = []
        for part in raw.split(spec.listSeparator):
            if not part.startswith(spec.candidatePrefix):
                continue
            try:
                candidates.append(_decode(part[len(spec.candidatePrefix) :], spec.encoding))
            except (binascii.Error, ValueError):
                continue
        if not candidates:
            raise VerificationError(
                "malformed_signature",
                f"{self.where} has no '{spec.candidatePrefix}<{spec.encoding}>' signature",
            )
        return _Signature(candidates, {})


# --- timestamps -------------------------------------------------------------------------------


class _Timestamp:
    def __init__(self, spec: TimestampSpec, signature_where: str) -> None:
        self.spec = spec
        self.digits = 12 if spec.unit == "seconds" else 15
        self.pattern = re.compile(f"[0-9]{{1,{self.digits}}}")
        self.header = spec.header.lower() if spec.header else None
        if spec.header is not None:
            self.where = f"header {spec.header.lower()}"
        elif spec.query is not None:
            self.where = f"query parameter {spec.query}"
        else:
            self.where = f"'{spec.signatureKey}' in {signature_where}"

    def read(self, request: Inbound, signature: _Signature | None) -> str:
        spec = self.spec
        if self.header is not None:
            text = _header(request, self.header)
        elif spec.query is not None:
            text = _query(request, spec.query)
        else:
            assert signature is not None
            assert spec.signatureKey is not None
            text = signature.parts.get(spec.signatureKey)
            if text is None:
                raise VerificationError("malformed_signature", f"{self.where} is missing")
        assert text is not None
        if not self.pattern.fullmatch(text):
            raise VerificationError("malformed_timestamp", f"{self.where} must be unix {spec.unit}")
        return text

    def check(self, text: str, *, now: float, tolerance: int) -> str:
        """Check freshness; return the timestamp as it is signed (digits, no leading zeros)."""
        value = int(text)
        seconds = value / 1000 if self.spec.unit == "milliseconds" else value
        limit = self.spec.toleranceSeconds or tolerance
        skew = now - seconds
        if skew > limit:
            raise VerificationError(
                "stale_timestamp",
                f"{self.where} is {int(skew)} s in the past; the tolerance is {limit} s",
            )
        if -skew > limit:
            raise VerificationError(
                "future_timestamp",
                f"{self.where} is {int(-skew)} s in the future; the tolerance is {limit} s",
            )
        return str(value)


# --- checks -----------------------------------------------------------------------------------


class _Algorithm:
    def __init__(self, spec: str | AlgorithmFromHeader, kind: str) -> None:
        self.kind = kind
        self.spec = spec
        if isinstance(spec, AlgorithmFromHeader):
            self.values = {name.lower(): HASHES[value] for name, value in spec.values.items()}
            if spec.default.lower() not in self.values:
                raise ValueError("algorithm.default must be one of algorithm.values")
            self.header = spec.header.lower()

    def pick(self, request: Inbound) -> tuple[Callable[..., Any], str]:
        spec = self.spec
        if not isinstance(spec, AlgorithmFromHeader):
            return HASHES[spec], f"hmac-{spec}" if self.kind == "hmac" else spec
        name = (_header(request, self.header, required=False) or spec.default).lower()
        function = self.values.get(name)
        if function is None:
            raise VerificationError(
                "unsupported_algorithm",
                f"header {spec.header.lower()} must be one of {', '.join(spec.values)}",
            )
        return function, name


class _DigestCheck:
    """``hmac`` and ``hash`` checks: the same steps, a keyed or a plain digest."""

    def __init__(self, spec: HmacCheck | HashCheck) -> None:
        self.keyed = isinstance(spec, HmacCheck)
        self.key_spec: KeySpec = spec.key
        self.algorithm = _Algorithm(spec.algorithm, "hmac" if self.keyed else "sha")
        self.template = Template(spec.signedPayload, allow_key=not self.keyed)
        self.reader = _SignatureReader(spec.signature)
        self.timestamp = _Timestamp(spec.timestamp, self.reader.where) if spec.timestamp else None
        if self.template.uses_timestamp and self.timestamp is None:
            raise ValueError("signedPayload uses {timestamp}: declare 'timestamp'")
        if spec.timestamp and spec.timestamp.signatureKey and spec.signature.format != "kv":
            raise ValueError("timestamp.signatureKey needs signature.format 'kv'")
        self.required = list(spec.require) if isinstance(spec, HmacCheck) else []
        self.required_patterns = [re.compile(item.pattern) for item in self.required]
        self.misuse = (
            [(Template(m.signedPayload, allow_key=False), m) for m in spec.misuse]
            if isinstance(spec, HmacCheck)
            else []
        )

    def verify(
        self, request: Inbound, secrets: Sequence[Secret], *, now: float, tolerance: int
    ) -> str | None:
        for item, pattern in zip(self.required, self.required_patterns, strict=True):
            value = _header(request, item.header.lower())
            assert value is not None
            if not pattern.fullmatch(value):
                raise VerificationError(
                    "malformed_header", f"header {item.header.lower()} must be {item.description}"
                )
        raw = self.reader.raw(request)
        function, label = self.algorithm.pick(request)
        digest_size = _DIGEST_SIZES[function]
        signature: _Signature | None = None
        if self.timestamp is not None and self.timestamp.spec.signatureKey is not None:
            signature = self.reader.read(raw, digest_size, label)
        timestamp = None
        if self.timestamp is not None:
            text = self.timestamp.read(request, signature)
            timestamp = self.timestamp.check(text, now=now, tolerance=tolerance)
        if signature is None:
            signature = self.reader.read(raw, digest_size, label)
        keys = [(secret.id, secret.for_check(self.key_spec)) for secret in secrets]
        signed = self.template.render(request, timestamp) if self.keyed else b""
        matched = self._match(self.template, signed, request, timestamp, keys, function, signature)
        if matched is not None:
            return matched
        for template, misuse in self.misuse:
            signed = template.render(request, timestamp)
            found = self._match(template, signed, request, timestamp, keys, function, signature)
            if found is not None:
                raise VerificationError(misuse.reason, misuse.message)
        raise VerificationError(
            "mismatch",
            f"{self.reader.where.removeprefix('header ')} does not match"
            f" {self.template.describe()} under any active key of this source",
        )

    def _match(  # noqa: PLR0917 - the one hot internal call, kept positional
        self,
        template: Template,
        signed: bytes,
        request: Inbound,
        timestamp: str | None,
        keys: list[tuple[str, bytes | None]],
        function: Callable[..., Any],
        signature: _Signature,
    ) -> str | None:
        candidates = signature.candidates
        for key_id, key in keys:
            if key is None:
                continue
            if self.keyed:
                digest = hmac.new(key, signed, function).digest()
            else:
                digest = function(template.render(request, timestamp, key)).digest()
            for candidate in candidates:
                if hmac.compare_digest(digest, candidate):
                    return key_id
        return None


class _TokenCheck:
    def __init__(self, spec: TokenCheck) -> None:
        self.spec = spec
        if spec.scheme is not None:
            self.where = f"header authorization ({spec.scheme})"
        elif spec.header is not None:
            self.where = f"header {spec.header.lower()}"
        else:
            self.where = f"query parameter {spec.query}"

    def _presented(self, request: Inbound) -> bytes:
        spec = self.spec
        if spec.scheme is not None:
            value = _header(request, "authorization")
            assert value is not None
            word, _, credential = value.partition(" ")
            if word.lower() != spec.scheme:
                raise VerificationError(
                    "malformed_credential",
                    f"header authorization must use the {spec.scheme.title()} scheme",
                )
            credential = credential.strip()
            if spec.scheme == "basic":
                try:
                    return base64.b64decode(credential, validate=True)
                except (binascii.Error, ValueError):
                    raise VerificationError(
                        "malformed_credential", "header authorization (basic) is not base64"
                    ) from None
            return credential.encode()
        if spec.header is not None:
            value = _header(request, spec.header.lower())
        else:
            assert spec.query is not None
            value = _query(request, spec.query)
        assert value is not None
        if spec.prefix:
            if not value.startswith(spec.prefix):
                raise VerificationError(
                    "malformed_credential", f"{self.where} must start with '{spec.prefix}'"
                )
            value = value[len(spec.prefix) :]
        return value.encode()

    def verify(
        self, request: Inbound, secrets: Sequence[Secret], *, now: float, tolerance: int
    ) -> str | None:
        presented = self._presented(request)
        matched = None
        for secret in secrets:
            key = secret.for_check(self.spec.key)
            # Every key is compared (no early exit), so timing does not tell which one matched.
            if key is not None and hmac.compare_digest(presented, key) and matched is None:
                matched = secret.id
        if matched is None:
            raise VerificationError(
                "mismatch", f"{self.where} does not match any active key of this source"
            )
        return matched


class _SourceIpCheck:
    def __init__(self, spec: SourceIpCheck) -> None:
        self.networks = [ipaddress.ip_network(cidr, strict=False) for cidr in spec.cidrs]

    def verify(
        self, request: Inbound, secrets: Sequence[Secret], *, now: float, tolerance: int
    ) -> str | None:
        try:
            address = ipaddress.ip_address((request.client or "").strip())
        except ValueError:
            raise VerificationError(
                "ip_not_allowed", "the client address is unknown", present=False
            ) from None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if not any(address in network for network in self.networks):
            raise VerificationError(
                "ip_not_allowed",
                f"client address {address} is not in the networks this adapter allows",
                present=False,
            )
        return None


class _AnyOf:
    def __init__(self, alternatives: list[Verifier]) -> None:
        self.alternatives = alternatives

    def verify(
        self, request: Inbound, secrets: Sequence[Secret], *, now: float, tolerance: int
    ) -> str | None:
        errors: list[VerificationError] = []
        for alternative in self.alternatives:
            try:
                return alternative.verify(request, secrets, now=now, tolerance=tolerance)
            except VerificationError as error:
                errors.append(error)
        for failure in errors:
            if failure.present:
                raise failure
        raise VerificationError(
            errors[0].reason, ", or ".join(str(failure) for failure in errors), present=False
        )


class _AllOf:
    def __init__(self, checks: list[Verifier]) -> None:
        self.checks = checks

    def verify(
        self, request: Inbound, secrets: Sequence[Secret], *, now: float, tolerance: int
    ) -> str | None:
        found: str | None = None
        for check in self.checks:
            key_id = check.verify(request, secrets, now=now, tolerance=tolerance)
            found = found or key_id
        return found


def _compile_one(spec: Check) -> Verifier:
    if isinstance(spec, AnyOfCheck):
        return _AnyOf([_compile_one(item) for item in spec.anyOf])
    if isinstance(spec, HmacCheck | HashCheck):
        return _DigestCheck(spec)
    if isinstance(spec, TokenCheck):
        return _TokenCheck(spec)
    return _SourceIpCheck(spec)


def compile_checks(specs: Sequence[Check]) -> Verifier:
    """One verifier for the whole ``verify`` list (every check must pass)."""
    checks = [_compile_one(spec) for spec in specs]
    return checks[0] if len(checks) == 1 else _AllOf(checks)


def key_specs(specs: Sequence[Check]) -> list[KeySpec]:
    """Every key spec in ``specs`` (a configured key must decode under at least one)."""
    found: list[KeySpec] = []
    for spec in specs:
        if isinstance(spec, AnyOfCheck):
            found += key_specs(spec.anyOf)
        elif not isinstance(spec, SourceIpCheck):
            found.append(spec.key)
    return found


def client_address(
    peer: str | None, headers: ValuesGetter, trusted_header: str | None
) -> str | None:
    """The client's address for ``source-ip`` checks.

    Only the header named by TRUSTED_PROXY_HEADER is believed, and only its last entry: that is
    the one our own proxy appended; anything before it came from the client. Without the setting,
    or without the header (a request that bypassed the proxy), the TCP peer is the client.
    """
    if trusted_header is None:
        return peer
    values = headers(trusted_header.lower())
    if not values:
        return peer
    last = values[-1].split(",")[-1].strip()
    return last or peer
