"""From a provider's JSON body to canonical events: ignore rules, splitting, then item mapping.

Three outcomes per item, and one for the whole request:

- **mapped**: a canonical event (the same contract as a posted one, checked by
  :class:`~courier_gateway.events.CourierEvent`);
- **unmapped**: a well-formed item whose status or time cannot be mapped (a status the map does
  not know, a zone-less time without a declared zone…). It is still accepted, carrying the
  provider's original item, so the worker dead-letters it ``UNMAPPED`` and a replay re-maps it
  with the adapter as it is then;
- **ignored**: a rule said so (a non-tracking topic, a status mapped to ``ignore``);
- and :class:`PayloadError` for the request: not JSON, a split that is not a list, an item without
  a shipment id or event id. Structural problems refuse the whole request (400), so a batch is
  never half-taken.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from courier_gateway.adapters.expressions import Expression, ExpressionError, compile_expression
from courier_gateway.adapters.model import EventSpec, IgnoreRule, SplitStage, TimeSpec
from courier_gateway.adapters.statusmap import IGNORE, StatusMap, StatusMapError, status_key
from courier_gateway.adapters.times import (
    TimeFormat,
    TimeParseError,
    TimeRule,
    format_utc,
    parse_offset,
    zone_named,
)

__all__ = [
    "Ignored",
    "Mapped",
    "Mapper",
    "Mapping",
    "PayloadError",
    "Unmapped",
]

_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
_EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_.-]{0,127}$")
_OPTIONAL = ("carrier", "trackingNumber", "location", "carrierStatusCode", "carrierStatusText")


class PayloadError(ValueError):
    """The request is structurally wrong; ``check`` names the part, ``str()`` says what."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}" if check else message)
        self.check = check


@dataclass(frozen=True, slots=True)
class Mapped:
    """A canonical event, in its wire (JSON-ready) form."""

    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Unmapped:
    """An accepted item that could not be mapped; dead-lettered ``UNMAPPED`` by the worker.

    ``event`` has what could be mapped (ids, shipment, no status); ``original`` is the item's
    context (each split name → its element) as JSON text, so any JSON survives storage as sent.
    """

    event: dict[str, Any]
    check: str
    message: str
    original: str


@dataclass(frozen=True, slots=True)
class Ignored:
    """An item (or the whole request) acknowledged and dropped, and why."""

    reason: str


@dataclass
class Mapping:
    """What one request became."""

    results: list[Mapped | Unmapped | Ignored] = field(default_factory=list)

    @property
    def events(self) -> list[Mapped | Unmapped]:
        """Everything to enqueue (mapped and unmapped)."""
        return [result for result in self.results if not isinstance(result, Ignored)]

    @property
    def ignored(self) -> list[Ignored]:
        """The ignored items."""
        return [result for result in self.results if isinstance(result, Ignored)]


class _UnmappableError(Exception):
    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check
        self.message = message


@dataclass(frozen=True, slots=True)
class _Time:
    expression: Expression
    rule: TimeRule
    offset: Expression | None


@dataclass(frozen=True, slots=True)
class _Stage:
    each: Expression
    name: str
    latest: bool
    # The field of the previous binding this stage walks (``tracking.events`` → tracking,
    # events), when that simple: the original item of an unmapped event leaves that list out.
    parent_field: tuple[str, str] | None


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "empty text" if not value else "text"
    return "a number"


def _compile(where: str, source: str) -> Expression:
    try:
        return compile_expression(source)
    except ExpressionError as error:
        raise ValueError(f"{where}: {error}") from None


def _time(where: str, spec: TimeSpec) -> _Time:
    try:
        zone = zone_named(spec.zone) if spec.zone else None
    except ValueError as error:
        raise ValueError(f"{where}.zone: {error}") from None
    return _Time(
        _compile(f"{where}.value", spec.value),
        TimeRule(TimeFormat(spec.format), spec.pattern, zone),
        _compile(f"{where}.offset", spec.offset) if spec.offset else None,
    )


def _parent_field(stage: Expression, names: set[str]) -> tuple[str, str] | None:
    tree = stage.tree
    if tree["type"] != "subexpression" or len(tree["children"]) != 2:
        return None
    first, second = tree["children"]
    if first["type"] == "field" and second["type"] == "field" and first["value"] in names:
        return first["value"], second["value"]
    return None


class Mapper:
    """The compiled ``ignore``/``split``/``ignoreItems``/``event`` sections of an adapter."""

    def __init__(
        self,
        *,
        ignore: list[IgnoreRule],
        split: list[SplitStage],
        ignore_items: list[IgnoreRule],
        event: EventSpec,
        max_events: int,
    ) -> None:
        self.max_events = max_events
        self.ignore = [
            (_compile(f"ignore.{i}.when", r.when), r.reason) for i, r in enumerate(ignore)
        ]
        self.ignore_items = [
            (_compile(f"ignoreItems.{i}.when", r.when), r.reason)
            for i, r in enumerate(ignore_items)
        ]
        names: set[str] = {"body"}
        stages: list[_Stage] = []
        for index, stage in enumerate(split):
            each = _compile(f"split.{index}.each", stage.each)
            stages.append(
                _Stage(each, stage.as_, stage.history == "latest", _parent_field(each, names))
            )
            names.add(stage.as_)
        self.stages = stages
        self.event_id = _compile("event.eventId", event.eventId) if event.eventId else None
        key = event.idempotencyKey
        self.key_expression = (
            _compile("event.idempotencyKey", key) if isinstance(key, str) else None
        )
        self.key_digest = (
            [
                _compile(f"event.idempotencyKey.digest.{i}", part)
                for i, part in enumerate(key.digest)
            ]
            if key is not None and not isinstance(key, str)
            else None
        )
        self.event_type = _compile("event.eventType", event.eventType)
        times = event.occurredAt if isinstance(event.occurredAt, list) else [event.occurredAt]
        self.times = [
            _time(
                f"event.occurredAt.{i}"
                if isinstance(event.occurredAt, list)
                else "event.occurredAt",
                spec,
            )
            for i, spec in enumerate(times)
        ]
        self.shipment_id = _compile("event.shipmentId", event.shipmentId)
        self.order_id = _compile("event.orderId", event.orderId) if event.orderId else None
        self.status = _compile("event.status.value", event.status.value)
        self.status_map = StatusMap(event.status.map, ignore_case=event.status.ignoreCase)
        self.optional = [
            (name, _compile(f"event.{name}", getattr(event, name)))
            for name in _OPTIONAL
            if getattr(event, name) is not None
        ] + [(name, _compile(f"event.fields.{name}", expr)) for name, expr in event.fields.items()]

    # --- the request ---------------------------------------------------------------------------

    def map(
        self,
        body: Any,
        *,
        source: str,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
    ) -> Mapping:
        """Map a parsed body; raise :class:`PayloadError` for a structural problem."""
        context = {"body": body, "headers": headers or {}, "query": query or {}}
        for expression, reason in self.ignore:
            if _truthy(_search(expression, context, f"ignore ({expression.source})")):
                return Mapping([Ignored(reason)])
        items = list(self._items(context, 0, ""))
        if len(items) > self.max_events:
            raise PayloadError(
                "split",
                f"the request holds {len(items)} events; this adapter takes {self.max_events}",
            )
        mapping = Mapping()
        groups: dict[str, list[tuple[Mapped | Unmapped | Ignored, datetime | None]]] = {}
        for item, where, group in items:
            result, moment = self.map_item(item, source=source, where=where)
            if group is None:
                mapping.results.append(result)
            else:
                groups.setdefault(group, []).append((result, moment))
        for members in groups.values():
            mapping.results += _latest(members)
        return mapping

    def _items(
        self, context: dict[str, Any], depth: int, where: str
    ) -> Iterator[tuple[dict[str, Any], str, str | None]]:
        if depth == len(self.stages):
            yield context, where or "body", None
            return
        stage = self.stages[depth]
        found = _search(stage.each, context, f"split.{depth} ({stage.each.source})")
        if not isinstance(found, list):
            raise PayloadError(
                f"split.{depth} ({stage.each.source})" + (f" at {where}" if where else ""),
                f"expected a list, got {_describe(found)}",
            )
        for index, element in enumerate(found):
            child = dict(context)
            child[stage.name] = element
            label = f"{where}{'.' if where else ''}{stage.name}[{index}]"
            for item, item_where, group in self._items(child, depth + 1, label):
                yield item, item_where, (group or (where if stage.latest else None))

    # --- one item ------------------------------------------------------------------------------

    def map_item(
        self, context: dict[str, Any], *, source: str, where: str = "body"
    ) -> tuple[Mapped | Unmapped | Ignored, datetime | None]:
        """Map one item's context; the time is returned for ``history: latest``."""
        try:
            return self._map_item(context, source, where)
        except ExpressionError as error:
            # Only expressions using functions can fail, e.g. lower() given a number.
            raise PayloadError(f"expression at {where}", str(error)) from None

    def _map_item(
        self, context: dict[str, Any], source: str, where: str
    ) -> tuple[Mapped | Unmapped | Ignored, datetime | None]:
        for expression, reason in self.ignore_items:
            if _truthy(expression.evaluate(context)):
                return Ignored(reason), None
        shipment_id = _identifier(self.shipment_id, context, "event.shipmentId", where)
        event_id, key = self._identity(context, source, where)
        event_type = self.event_type.evaluate(context)
        if event_type.__class__ is not str or not _EVENT_TYPE.match(event_type):
            raise PayloadError(
                f"event.eventType at {where}",
                f"'{self.event_type.source}' must give a lower-case type like"
                f" shipment.status.updated, got {_describe(event_type)}",
            )
        payload: dict[str, Any] = {"shipmentId": shipment_id}
        self._optional(context, payload)
        # The contract of a posted event holds for what is stored, mapped or not (ids are
        # checked above; the provider's own values must be storable).
        _check_storable(payload, where)
        event: dict[str, Any] = {
            "eventId": event_id,
            "eventType": event_type,
            "occurredAt": None,
            "source": source,
            "idempotencyKey": key,
            "payload": payload,
        }
        moment: datetime | None = None
        try:
            moment = self._occurred_at(context)
            event["occurredAt"] = format_utc(moment)
            status, status_text = self._status(context)
        except _UnmappableError as problem:
            return Unmapped(event, problem.check, problem.message, self.original(context)), moment
        if status == IGNORE:
            return Ignored(f"status {status_text[:80]!r} is mapped to ignore"), None
        payload["status"] = status
        return Mapped(event), moment

    def _identity(self, context: dict[str, Any], source: str, where: str) -> tuple[str, str]:
        event_id = (
            _identifier(self.event_id, context, "event.eventId", where) if self.event_id else None
        )
        if self.key_digest is not None:
            values = [part.evaluate(context) for part in self.key_digest]
            encoded = _dumps(values, f"event.idempotencyKey at {where}", sort=True)
            key = hashlib.sha256(encoded).hexdigest()[:32]
        elif self.key_expression is not None:
            key = _identifier(self.key_expression, context, "event.idempotencyKey", where)
        else:
            assert event_id is not None
            key = event_id
        return event_id or key, f"{source}:{key}"

    def _optional(self, context: dict[str, Any], payload: dict[str, Any]) -> None:
        if self.order_id is not None:
            order = self.order_id.evaluate(context)
            if order.__class__ is int:
                order = str(order)
            if order.__class__ is str and _ID.match(order):
                payload["orderId"] = order
            elif order is not None and order != "":
                # Not an id the contract allows (spaces, too long): kept, under another name.
                payload["orderReference"] = order
        for name, expression in self.optional:
            value = expression.evaluate(context)
            if value is not None:
                payload[name] = value

    def _occurred_at(self, context: dict[str, Any]) -> datetime:
        for time in self.times:
            try:
                value = time.expression.search(context)
            except ExpressionError as error:
                raise _UnmappableError(
                    "occurredAt", f"'{time.expression.source}': {error}"
                ) from None
            if value is None or value == "" or (isinstance(value, list) and None in value):
                continue
            try:
                offset = None
                if time.offset is not None:
                    given = time.offset.search(context)
                    offset = parse_offset(given) if given not in (None, "") else None
                return time.rule.parse(value, offset=offset)
            except (TimeParseError, ExpressionError) as error:
                raise _UnmappableError(
                    "occurredAt", f"'{time.expression.source}': {error}"
                ) from None
        sources = ", ".join(f"'{time.expression.source}'" for time in self.times)
        raise _UnmappableError("occurredAt", f"no time: {sources} gave nothing")

    def _status(self, context: dict[str, Any]) -> tuple[str, str]:
        try:
            key = status_key(self.status.search(context))
        except (ExpressionError, StatusMapError) as error:
            raise _UnmappableError("status", f"'{self.status.source}': {error}") from None
        if key is None:
            raise _UnmappableError("status", f"'{self.status.source}' gave nothing")
        target = self.status_map.lookup(key)
        if target is None:
            raise _UnmappableError(
                "status", f"status {key[:80]!r} is not in the adapter's status map"
            )
        return target, key

    def original(self, context: dict[str, Any]) -> str:
        """The item as the provider sent it: each split name's element, parents without the list
        that was split (it holds the item's siblings), and the body when nothing was split."""
        if not self.stages:
            return _dumps({"body": context["body"]}, "body").decode()
        kept: dict[str, Any] = {}
        for stage in self.stages:
            kept[stage.name] = context[stage.name]
        for stage in self.stages:
            if stage.parent_field is None:
                continue
            parent, walked = stage.parent_field
            if parent == "body":
                continue
            value = kept.get(parent)
            if isinstance(value, dict) and walked in value:
                kept[parent] = {k: v for k, v in value.items() if k != walked}
        first = self.stages[0]
        if first.parent_field is not None and first.parent_field[0] == "body":
            body = context["body"]
            if isinstance(body, dict):
                kept["body"] = {k: v for k, v in body.items() if k != first.parent_field[1]}
        return _dumps(kept, "body").decode()


def _latest(
    members: list[tuple[Mapped | Unmapped | Ignored, datetime | None]],
) -> list[Mapped | Unmapped | Ignored]:
    """``history: latest``: the newest timed item, plus anything whose time is unknown."""
    timed = [(moment, result) for result, moment in members if moment is not None]
    untimed = [result for result, moment in members if moment is None]
    if not timed:
        return untimed
    newest = max(timed, key=lambda pair: pair[0])[1]
    return [newest, *untimed]


def _search(expression: Expression, context: Any, name: str, where: str = "") -> Any:
    """Evaluate where a failure is a structural error naming ``name``."""
    try:
        return expression.search(context)
    except ExpressionError as error:
        raise PayloadError(f"{name} at {where}" if where else name, str(error)) from None


def _identifier(expression: Expression, context: dict[str, Any], name: str, where: str) -> str:
    value = expression.evaluate(context)
    if value.__class__ is int:
        value = str(value)
    if value.__class__ is not str or not _ID.match(value):
        raise PayloadError(
            f"{name} at {where}",
            f"'{expression.source}' must give 1-128 printable characters without spaces,"
            f" got {_describe(value)}",
        )
    return str(value)


_INT64 = 2**63
_MAX_DEPTH = 32


def _check_storable(payload: dict[str, Any], where: str) -> None:
    """What :class:`~courier_gateway.events.ShipmentPayload` demands of extra fields: MongoDB
    must store them as sent (no integers beyond 64 bits, no NaN, no '$'/'.' keys, bounded
    nesting). Text, the common case, costs one class check."""
    for name, value in payload.items():
        if value.__class__ is not str:
            problem = _storable(value, 1)
            if problem is not None:
                raise PayloadError(f"payload.{name} at {where}", problem)


def _storable(value: Any, depth: int) -> str | None:  # noqa: PLR0911 - one return per JSON type
    if depth > _MAX_DEPTH:
        return f"nested deeper than {_MAX_DEPTH} levels"
    kind = value.__class__
    if value is None or kind is str or kind is bool:
        return None
    if kind is int or kind is float:
        # As the event contract: every number within the 64-bit integer range, however spelt.
        fits = math.isfinite(value) and -_INT64 <= value <= _INT64 - 1
        return None if fits else "number out of the 64-bit range"
    if kind is dict:
        for key, item in value.items():
            if key.startswith("$") or "." in key or "\x00" in key:
                return f"key {key[:40]!r} cannot contain '.', NUL or start with '$'"
            problem = _storable(item, depth + 1)
            if problem is not None:
                return problem
        return None
    if kind is list:
        for item in value:
            problem = _storable(item, depth + 1)
            if problem is not None:
                return problem
    return None


def _dumps(value: Any, check: str, *, sort: bool = False) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort else None)
    except orjson.JSONEncodeError:
        # Only nesting beyond what JSON encoding allows (about 250 levels) gets here.
        raise PayloadError(check, "nested too deeply") from None


def _truthy(value: Any) -> bool:
    return not (value is None or value is False or value in ("", [], {}))
