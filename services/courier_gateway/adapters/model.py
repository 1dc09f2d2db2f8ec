"""The adapter document: what one YAML file may say, checked field by field when it is loaded.

This module is only the schema (pydantic models, unknown fields refused); ``compile.py`` turns a
checked document into the runtime :class:`~courier_gateway.adapters.adapter.Adapter`.
docs/adapters.md describes every field with examples.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "AdapterDocument",
    "AlgorithmFromHeader",
    "AnyOfCheck",
    "Check",
    "EventSpec",
    "HandshakeSpec",
    "HashCheck",
    "HmacCheck",
    "IgnoreRule",
    "KeySpec",
    "MisuseSpec",
    "RequiredHeader",
    "SignatureSpec",
    "SourceIpCheck",
    "SplitStage",
    "StatusSpec",
    "TimeSpec",
    "TimestampSpec",
    "TokenCheck",
]

NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_HEADER = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,100}$"
HeaderName = Annotated[str, Field(pattern=_HEADER)]
Expr = Annotated[str, Field(min_length=1, max_length=2000)]
Algorithm = Literal["sha256", "sha512", "sha1"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class KeySpec(_Strict):
    """How a configured secret becomes key bytes."""

    encoding: Literal["utf-8", "nfkd", "base64", "hex", "whsec"] = "utf-8"
    minLength: Annotated[int, Field(ge=1, le=4096)] = 8  # noqa: N815 - the file's spelling
    #: What the secret is called in messages ("a standard-webhooks secret must start with …").
    label: str = "a secret"


class SignatureSpec(_Strict):
    """Where the signature is and how it is written."""

    header: HeaderName | None = None
    query: str | None = None
    prefix: str = ""
    encoding: Literal["hex", "base64", "base64url"] = "hex"
    format: Literal["plain", "kv", "list"] = "plain"
    #: ``kv``: ``t=…,v1=…`` (Stripe-like). ``list``: space-separated ``v1,<sig>`` candidates.
    pairSeparator: str = ","  # noqa: N815
    keySeparator: str = "="  # noqa: N815
    signatureKey: str = "v1"  # noqa: N815
    listSeparator: str | None = None  # noqa: N815 - None: any whitespace
    candidatePrefix: str = "v1,"  # noqa: N815

    @model_validator(mode="after")
    def _one_place(self) -> SignatureSpec:
        if (self.header is None) == (self.query is None):
            raise ValueError("give exactly one of 'header' or 'query'")
        return self


class TimestampSpec(_Strict):
    """A signed timestamp and how fresh it must be."""

    header: HeaderName | None = None
    query: str | None = None
    #: A key of a ``kv`` signature header (``t`` in ``t=…,v1=…``).
    signatureKey: str | None = None  # noqa: N815
    unit: Literal["seconds", "milliseconds"] = "seconds"
    #: Default: the source's ``toleranceSeconds`` (``SIGNATURE_TOLERANCE_SECONDS``).
    toleranceSeconds: Annotated[int, Field(ge=1, le=86400)] | None = None  # noqa: N815

    @model_validator(mode="after")
    def _one_place(self) -> TimestampSpec:
        given = [self.header, self.query, self.signatureKey]
        if sum(value is not None for value in given) != 1:
            raise ValueError("give exactly one of 'header', 'query' or 'signatureKey'")
        return self


class AlgorithmFromHeader(_Strict):
    """The hash algorithm named by a request header (the ``v1`` scheme's x-signature-algorithm)."""

    header: HeaderName
    values: dict[str, Algorithm]
    default: str


class RequiredHeader(_Strict):
    """A header that must be present and match a pattern (e.g. ``webhook-id``)."""

    header: HeaderName
    pattern: str
    description: str


class MisuseSpec(_Strict):
    """A known wrong way of signing, recognised to give a precise refusal."""

    signedPayload: str  # noqa: N815
    reason: Annotated[str, Field(pattern=r"^[a-z_]{1,40}$")]
    message: str


class HmacCheck(_Strict):
    """An HMAC over a template of request parts."""

    type: Literal["hmac"]
    algorithm: Algorithm | AlgorithmFromHeader = "sha256"
    key: KeySpec = KeySpec()
    signedPayload: str = "{body}"  # noqa: N815
    signature: SignatureSpec
    timestamp: TimestampSpec | None = None
    require: list[RequiredHeader] = Field(default_factory=list)
    misuse: list[MisuseSpec] = Field(default_factory=list)


class HashCheck(_Strict):
    """A plain hash over a template that includes ``{key}`` (17TRACK: ``{body}/{key}``)."""

    type: Literal["hash"]
    algorithm: Algorithm = "sha256"
    key: KeySpec = KeySpec()
    signedPayload: str  # noqa: N815
    signature: SignatureSpec
    timestamp: TimestampSpec | None = None

    @model_validator(mode="after")
    def _has_key(self) -> HashCheck:
        if "{key}" not in self.signedPayload:
            raise ValueError("signedPayload of a hash check must contain {key}")
        return self


class TokenCheck(_Strict):
    """A static credential compared in constant time."""

    type: Literal["token"]
    header: HeaderName | None = None
    query: str | None = None
    #: ``bearer``: ``Authorization: Bearer <token>``; ``basic``: ``Authorization: Basic`` with the
    #: key ``user:password``.
    scheme: Literal["bearer", "basic"] | None = None
    prefix: str = ""
    key: KeySpec = KeySpec()

    @model_validator(mode="after")
    def _one_place(self) -> TokenCheck:
        if sum(value is not None for value in (self.header, self.query, self.scheme)) != 1:
            raise ValueError("give exactly one of 'header', 'query' or 'scheme'")
        return self


class SourceIpCheck(_Strict):
    """The client address must be in one of the networks (see TRUSTED_PROXY_HEADER)."""

    type: Literal["source-ip"]
    cidrs: Annotated[list[str], Field(min_length=1)]


class AnyOfCheck(_Strict):
    """Alternatives: the request passes when one of them passes."""

    anyOf: Annotated[list[Check], Field(min_length=1)]  # noqa: N815


Check = (
    Annotated[HmacCheck | HashCheck | TokenCheck | SourceIpCheck, Field(discriminator="type")]
    | AnyOfCheck
)


class HandshakeSpec(_Strict):
    """An answer to a provider's probe (Ship24 sends ``HEAD`` before saving a URL)."""

    method: Literal["HEAD", "GET", "OPTIONS"]
    status: Annotated[int, Field(ge=200, le=299)] = 200
    body: str | None = None
    #: Answer with the value of this query parameter (a "challenge" echo).
    echoQuery: str | None = None  # noqa: N815


class IgnoreRule(_Strict):
    """A condition under which a request (or an item) is acknowledged and dropped."""

    when: Expr
    reason: Annotated[str, Field(min_length=1, max_length=200)]


class SplitStage(_Strict):
    """One level of splitting: a list in the context, each element bound to a name."""

    each: Expr
    as_: Annotated[str, Field(alias="as", pattern=r"^[a-z][A-Za-z0-9_]{0,30}$")]
    #: For lists that repeat a whole history: ``all`` entries, or only the ``latest`` (by time).
    history: Literal["all", "latest"] = "all"


class TimeSpec(_Strict):
    """How to read ``occurredAt``."""

    value: Expr
    format: Literal["rfc3339", "unix-seconds", "unix-milliseconds", "yyyymmddhhmmss", "strptime"]
    pattern: str | None = None
    #: For zone-less times: UTC or an IANA zone name.
    zone: str | None = None
    #: For zone-less times: an expression giving the offset (``-04.00``, ``+0200``); wins over zone.
    offset: Expr | None = None

    @model_validator(mode="after")
    def _pattern(self) -> TimeSpec:
        if (self.format == "strptime") != (self.pattern is not None):
            raise ValueError("'pattern' is needed with format strptime, and only there")
        return self


class StatusSpec(_Strict):
    """The carrier's status value and its map to canonical statuses (or ``ignore``)."""

    value: Expr
    map: Annotated[dict[str, str], Field(min_length=1)]
    ignoreCase: bool = False  # noqa: N815


class DigestSpec(_Strict):
    """A derived key: a digest of the listed values (for providers without event ids)."""

    digest: Annotated[list[Expr], Field(min_length=1)]


class EventSpec(_Strict):
    """The canonical event an item becomes; every value is an expression."""

    eventId: Expr | None = None  # noqa: N815
    idempotencyKey: Expr | DigestSpec | None = None  # noqa: N815
    eventType: Expr = "'shipment.status.updated'"  # noqa: N815
    occurredAt: TimeSpec | list[TimeSpec]  # noqa: N815
    shipmentId: Expr  # noqa: N815
    orderId: Expr | None = None  # noqa: N815
    status: StatusSpec
    carrier: Expr | None = None
    trackingNumber: Expr | None = None  # noqa: N815
    location: Expr | None = None
    carrierStatusCode: Expr | None = None  # noqa: N815
    carrierStatusText: Expr | None = None  # noqa: N815
    #: More payload fields, kept as the provider sent them.
    fields: dict[Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,62}$")], Expr] = Field(
        default_factory=dict
    )

    @model_validator(mode="after")
    def _has_identity(self) -> EventSpec:
        if self.eventId is None and self.idempotencyKey is None:
            raise ValueError("give eventId or idempotencyKey (e.g. a digest of fields)")
        return self


class AdapterDocument(_Strict):
    """One adapter file."""

    name: Annotated[str, Field(pattern=NAME)]
    title: Annotated[str, Field(min_length=1, max_length=200)]
    description: str = ""
    #: Where the provider documents its webhooks.
    references: list[str] = Field(default_factory=list)
    #: Details the public documentation did not confirm (shown by ``adapters list``).
    unconfirmed: list[str] = Field(default_factory=list)
    format: Literal["canonical", "mapped"] = "mapped"
    verify: list[Check]
    allowUnauthenticated: bool = False  # noqa: N815
    response: Annotated[int, Field(ge=200, le=299)] = 202
    handshake: list[HandshakeSpec] = Field(default_factory=list)
    ignore: list[IgnoreRule] = Field(default_factory=list)
    split: list[SplitStage] = Field(default_factory=list)
    ignoreItems: list[IgnoreRule] = Field(default_factory=list)  # noqa: N815
    event: EventSpec | None = None
    maxEvents: Annotated[int, Field(ge=1, le=100_000)] = 1000  # noqa: N815
    #: A sample request body (JSON) for ``courier-gateway sign --adapter`` and the docs.
    sample: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> AdapterDocument:
        if not self.verify and not self.allowUnauthenticated:
            raise ValueError("verify: at least one check, or allowUnauthenticated: true")
        if self.format == "mapped" and self.event is None:
            raise ValueError("event: required for format 'mapped'")
        if self.format == "canonical" and (self.event or self.split or self.ignoreItems):
            raise ValueError("a 'canonical' adapter takes the body as the event: no event/split")
        names = [stage.as_ for stage in self.split]
        reserved = {"body", "headers", "query"} & set(names)
        if reserved or len(names) != len(set(names)):
            raise ValueError("split: each 'as' name must be unique and not body/headers/query")
        return self


AnyOfCheck.model_rebuild()
