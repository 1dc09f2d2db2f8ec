"""The courier event: the contract couriers post and the worker consumes.

Structural rules live here and are enforced at intake (a structurally invalid event is a 400 and
is never enqueued). Whether an event can be *applied* (a known event type, a legal status
transition) is the worker's business: such events are valid here and dead-lettered there.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

__all__ = ["CourierEvent", "EventError", "ShipmentPayload", "excerpt", "parse_event"]

# Printable ASCII without spaces: ids end up in logs, Redis keys and URLs.
_ID = r"^[\x21-\x7e]+$"
_INT64_MAX = 2**63 - 1
_MAX_DEPTH = 32

Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=_ID)]

# RFC 3339 date-time with seconds and a zone. pydantic alone would also take unix times given
# as digit strings, dates without seconds and offsets without a colon.
_RFC3339 = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)


def _rfc3339(value: object) -> object:
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 date-time with a zone, e.g. 2026-02-28T10:00:00Z")
    return value


# Lax inside: the text is already checked, and strict mode would refuse str -> datetime here.
Timestamp = Annotated[AwareDatetime, Field(strict=False), BeforeValidator(_rfc3339)]


class ShipmentPayload(BaseModel):
    """The shipment update; fields beyond the known ones are kept as sent."""

    model_config = ConfigDict(extra="allow", strict=True)

    shipmentId: Identifier  # noqa: N815 - the wire format's spelling
    status: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_.-]*$")]
    orderId: Identifier | None = None  # noqa: N815

    @model_validator(mode="after")
    def _extras_fit_storage(self) -> ShipmentPayload:
        # Extra fields are stored in MongoDB and re-serialised: integers beyond 64 bits have no
        # BSON type and non-finite floats are not JSON, so both are refused here, not lost later.
        if self.model_extra:
            _check_storable(self.model_extra, "payload", 0)
        return self


def excerpt(text: str, limit: int = 32) -> str:
    """A bounded, printable excerpt of client-chosen text, safe to put in an error message.

    Anything outside printable ASCII becomes ``?`` and long text is cut with ``…``, so a message
    can name a bad key without echoing control characters or megabytes back (or into logs).
    """
    cut = text[:limit]
    cleaned = "".join(char if " " <= char <= "~" else "?" for char in cut)
    return cleaned + ("…" if len(text) > limit else "")


def _check_storable(value: Any, where: str, depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise ValueError(f"{where}: nested deeper than {_MAX_DEPTH} levels")
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int | float):
        # JSON does not tell 1e20 from 100000000000000000000, so neither may pass: every number
        # must fit the 64-bit integer range, however it is spelt (the OpenAPI document says the
        # same with minimum and maximum). Integers beyond it have no BSON type.
        if not (math.isfinite(value) and -_INT64_MAX - 1 <= value <= _INT64_MAX):
            raise ValueError(f"{where}: number out of the 64-bit range")
    elif isinstance(value, dict):
        for key, item in value.items():
            if key.startswith("$") or "." in key or "\x00" in key:
                raise ValueError(
                    f"{where}: key '{excerpt(key)}' cannot contain '.', NUL or start with '$'"
                )
            _check_storable(item, f"{where}.{excerpt(key)}", depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_storable(item, f"{where}[{index}]", depth + 1)


class CourierEvent(BaseModel):
    """A shipment event as a courier sends it (see the README's API section).

    Unknown top-level fields are accepted and dropped: a courier that adds a field to its
    webhooks must not lose every event (the original accepted them too). Unknown fields inside
    ``payload`` are kept.
    """

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    eventId: Identifier  # noqa: N815
    eventType: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[a-z][a-z0-9_.-]*$")]  # noqa: N815
    occurredAt: Timestamp  # noqa: N815
    source: (
        Annotated[str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9][a-z0-9_-]*$")] | None
    ) = None
    idempotencyKey: Annotated[str, Field(min_length=1, max_length=256, pattern=_ID)] | None = None  # noqa: N815
    payload: ShipmentPayload

    def resolved(self, path_source: str) -> CourierEvent:
        """The event with ``source`` and ``idempotencyKey`` filled in from their defaults."""
        source = self.source or path_source
        key = self.idempotencyKey or f"{source}:{self.eventId}"
        if source == self.source and key == self.idempotencyKey:
            return self
        return self.model_copy(update={"source": source, "idempotencyKey": key})

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready form placed on the queue (RFC 3339 ``occurredAt``, extras kept)."""
        return self.model_dump(mode="json")


class EventError(ValueError):
    """An event body that is not a valid event; ``str()`` says what is wrong, without echoing it."""


def parse_event(raw: bytes, path_source: str, *, default_source: str) -> CourierEvent:
    """Parse and validate one event body, filling defaults; raise :class:`EventError`.

    ``source`` in the body must match the path's source, except on the default source's path,
    which (as in the original gateway) carries events of any courier.
    """
    try:
        event = CourierEvent.model_validate_json(raw)
    except ValidationError as error:
        raise EventError(_describe(error)) from None
    if event.source is not None and path_source not in {default_source, event.source}:
        raise EventError(
            f"source: '{event.source}' does not match the source of the URL '{path_source}'"
        )
    return event.resolved(path_source)


def _describe(error: ValidationError) -> str:
    problems = error.errors(include_url=False, include_input=False, include_context=False)
    first = problems[0]
    where = excerpt(".".join(str(part) for part in first["loc"]), 80)
    message = excerpt(first["msg"], 160)
    if first["type"] == "json_invalid":
        return f"body is not valid JSON ({message.removeprefix('Invalid JSON: ')})"
    if first["type"] == "missing":
        message = "field required"
    elif first["type"] == "model_type" and not where:
        return "body must be a JSON object"
    suffix = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{where or 'body'}: {message}{suffix}"
