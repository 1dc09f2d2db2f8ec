"""A compiled adapter: verify a request, answer a handshake, turn a body into canonical events.

Everything that can be checked is checked when the adapter is built (expressions compiled,
templates parsed, networks parsed, status targets known), so a request never meets a broken
adapter; :class:`AdapterError` names the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from courier_gateway.adapters.keys import Secret, decode_key
from courier_gateway.adapters.mapping import (
    Ignored,
    Mapped,
    Mapper,
    Mapping,
    PayloadError,
    Unmapped,
)
from courier_gateway.adapters.model import AdapterDocument, HandshakeSpec, KeySpec
from courier_gateway.adapters.statusmap import IGNORE
from courier_gateway.adapters.verification import (
    Inbound,
    Verifier,
    compile_checks,
    key_specs,
)
from courier_gateway.events import EventError, parse_event
from courier_gateway.statuses import STATUSES

__all__ = ["Adapter", "AdapterError"]


class AdapterError(ValueError):
    """An adapter document that cannot be used; ``str()`` names the file and the field."""


class Adapter:
    """One adapter, ready for requests."""

    def __init__(self, document: AdapterDocument, *, origin: str) -> None:
        self.document = document
        self.origin = origin
        self.name = document.name
        self.title = document.title
        self.canonical = document.format == "canonical"
        self.success_status = document.response
        self.handshakes: dict[str, HandshakeSpec] = {h.method: h for h in document.handshake}
        self.verifier: Verifier = self._checks(document)
        self.key_specs: list[KeySpec] = key_specs(document.verify)
        self.mapper: Mapper | None = None
        if document.event is not None:
            self._check_statuses(document)
            try:
                self.mapper = Mapper(
                    ignore=document.ignore,
                    split=document.split,
                    ignore_items=document.ignoreItems,
                    event=document.event,
                    max_events=document.maxEvents,
                )
            except ValueError as error:
                raise AdapterError(f"{origin}: {error}") from None
        elif document.ignore:
            raise AdapterError(f"{origin}: ignore: only for format 'mapped'")

    def _checks(self, document: AdapterDocument) -> Verifier:
        for index, check in enumerate(document.verify):
            try:
                compile_checks([check])
            except ValueError as error:
                raise AdapterError(f"{self.origin}: verify.{index}: {error}") from None
        return compile_checks(document.verify)

    def _check_statuses(self, document: AdapterDocument) -> None:
        assert document.event is not None
        allowed = STATUSES | {IGNORE}
        for key, target in document.event.status.map.items():
            if target not in allowed:
                raise AdapterError(
                    f"{self.origin}: event.status.map.{key}: {target!r} is not a shipment status"
                    f" (one of {', '.join(sorted(allowed))})"
                )

    def __repr__(self) -> str:
        return f"Adapter({self.name!r}, {self.origin!r})"

    # --- keys ----------------------------------------------------------------------------------

    def check_secret(self, text: str) -> None:
        """Raise ValueError when ``text`` decodes under none of this adapter's key specs."""
        if not self.key_specs:
            return
        first: ValueError | None = None
        for spec in self.key_specs:
            try:
                decode_key(spec, text)
                return
            except ValueError as error:
                first = first or error
        assert first is not None
        raise first

    def primary_key(self, text: str) -> bytes:
        """The key bytes under the first key spec (what ``sign`` uses)."""
        spec = self.key_specs[0] if self.key_specs else KeySpec()
        return decode_key(spec, text)

    # --- requests ------------------------------------------------------------------------------

    def verify(
        self, request: Inbound, secrets: Sequence[Secret], *, now: float, tolerance: int
    ) -> str | None:
        """The id of the key that verified the request; raise ``VerificationError``."""
        return self.verifier.verify(request, secrets, now=now, tolerance=tolerance)

    def remap(self, original: str, *, source: str) -> Mapped | Unmapped | Ignored:
        """Map an unmapped item's stored original again, with this adapter as it is now.

        Raise :class:`PayloadError` when the original no longer fits the adapter's shape.
        """
        if self.mapper is None:
            raise PayloadError(
                "adapter", f"{self.name!r} takes canonical events; nothing to re-map"
            )
        try:
            context: Any = orjson.loads(original)
        except orjson.JSONDecodeError:
            raise PayloadError("original", "not valid JSON") from None
        if not isinstance(context, dict):
            raise PayloadError("original", "must be a JSON object")
        context.setdefault("body", {})
        context.setdefault("headers", {})
        context.setdefault("query", {})
        result, _ = self.mapper.map_item(context, source=source, where="the stored original")
        return result

    def map_body(
        self,
        raw: bytes,
        *,
        source: str,
        default_source: str,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
    ) -> Mapping:
        """The events of a verified body; raise :class:`PayloadError` (a 400) when malformed."""
        if self.mapper is None:
            try:
                event = parse_event(raw, source, default_source=default_source)
            except EventError as error:
                raise PayloadError("", str(error)) from None
            return Mapping([Mapped(event.to_wire())])
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            raise PayloadError("body", f"not valid JSON ({str(error).split(':')[0]})") from None
        if not isinstance(body, dict | list):
            raise PayloadError("body", "must be a JSON object or list")
        return self.mapper.map(body, source=source, headers=headers, query=query)
