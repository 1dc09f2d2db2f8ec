"""Event times: the formats carriers send, turned into RFC 3339 UTC text.

Carriers send unix seconds or milliseconds, RFC 3339, ``YYYYMMDD`` + ``HHMMSS`` in two fields,
and, often, local times with no zone at all (AfterShip checkpoints, UPS local activity times,
Ship24 occurrence times). A zone-less time is read in the zone the adapter declares, or with the
offset another field carries (UPS ``gmtOffset: "-04.00"``); without either it cannot be mapped,
because guessing a zone would silently shift the event by hours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["TimeFormat", "TimeParseError", "TimeRule", "format_utc", "parse_offset", "zone_named"]


class TimeParseError(ValueError):
    """A value that is not a time in the declared format; ``str()`` says why."""


class TimeFormat(StrEnum):
    """How a time value is written."""

    RFC3339 = "rfc3339"  # ISO 8601 date and time, zone optional (then: zone or offset)
    UNIX_SECONDS = "unix-seconds"
    UNIX_MILLISECONDS = "unix-milliseconds"
    COMPACT = "yyyymmddhhmmss"  # e.g. UPS date + time fields joined: 20240423135004
    STRPTIME = "strptime"  # a Python strptime pattern, given in ``pattern``


_ISO = re.compile(
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}([.,][0-9]{1,9})?)?"
    r"([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)?$"
)
_COMPACT = re.compile(r"^[0-9]{14}$")
_OFFSET = re.compile(r"^([+-])?([0-9]{1,2})(?:[.:]?([0-9]{2}))?$")
# Outside these, a number is more likely the wrong unit than a real event time.
_EARLIEST = datetime(1970, 1, 2, tzinfo=UTC)
_LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def zone_named(name: str) -> tzinfo:
    """The zone ``UTC`` or an IANA name (``Europe/Berlin``); ValueError when unknown."""
    if name.upper() in {"UTC", "Z", "GMT"}:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use UTC or an IANA name)") from None


def parse_offset(value: Any) -> tzinfo:
    """An offset such as ``-04.00``, ``-0400``, ``+02:00``, ``-4`` or ``Z`` as a fixed zone."""
    if isinstance(value, str) and value.strip().upper() in {"Z", "UTC", "GMT"}:
        return UTC
    text = str(value).strip() if isinstance(value, str | int) else ""
    match = _OFFSET.match(text)
    if not match or isinstance(value, bool):
        raise TimeParseError(f"offset {str(value)[:40]!r} is not like -04.00, +0200 or +02:00")
    sign = -1 if match.group(1) == "-" else 1
    hours, minutes = int(match.group(2)), int(match.group(3) or 0)
    if hours > 18 or minutes > 59:
        raise TimeParseError(f"offset {text!r} is out of range")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def format_utc(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z`` (microseconds only when present)."""
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat() + "Z"


@dataclass(frozen=True, slots=True)
class TimeRule:
    """How to read one time value: its format and, for zone-less values, a zone."""

    format: TimeFormat
    pattern: str | None = None
    zone: tzinfo | None = None

    def parse(self, value: Any, *, offset: tzinfo | None = None) -> datetime:
        """An aware datetime; ``offset`` (from the item) wins over the declared zone."""
        if isinstance(value, list):
            if any(part is None for part in value):
                raise TimeParseError("one of the parts is missing")
            value = "".join(str(part) for part in value)
        if self.format in {TimeFormat.UNIX_SECONDS, TimeFormat.UNIX_MILLISECONDS}:
            moment = self._unix(value)
        else:
            if not isinstance(value, str):
                raise TimeParseError(f"expected text, got {_kind(value)}")
            moment = self._text(value.strip(), offset)
        if not _EARLIEST <= moment < _LATEST:
            raise TimeParseError(
                f"{format_utc(moment)} is outside 1970-2200 (a wrong unit or format?)"
            )
        return moment

    def _unix(self, value: Any) -> datetime:
        if isinstance(value, str) and re.fullmatch(r"[0-9]{1,16}(\.[0-9]{1,9})?", value.strip()):
            value = float(value) if "." in value else int(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TimeParseError(f"expected a unix time, got {_kind(value)}")
        seconds = value / 1000 if self.format is TimeFormat.UNIX_MILLISECONDS else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise TimeParseError(
                f"{value!r} is outside 1970-2200 as {self.format} (a wrong unit?)"
            ) from None

    def _text(self, text: str, offset: tzinfo | None) -> datetime:
        if self.format is TimeFormat.RFC3339:
            if not _ISO.match(text):
                raise TimeParseError(f"{text[:40]!r} is not an ISO 8601 date and time")
            try:
                moment = datetime.fromisoformat(text.replace(",", "."))
            except ValueError as error:
                raise TimeParseError(f"{text[:40]!r}: {error}") from None
        elif self.format is TimeFormat.COMPACT:
            if not _COMPACT.match(text):
                raise TimeParseError(f"{text[:40]!r} is not YYYYMMDDHHMMSS")
            try:  # by hand: strptime costs ten times as much
                moment = datetime(
                    int(text[0:4]),
                    int(text[4:6]),
                    int(text[6:8]),
                    int(text[8:10]),
                    int(text[10:12]),
                    int(text[12:14]),
                )
            except ValueError as error:
                raise TimeParseError(f"{text!r}: {error}") from None
        else:
            assert self.pattern is not None
            moment = self._strptime(text, self.pattern)
        if moment.tzinfo is not None:
            return moment
        zone = offset or self.zone
        if zone is None:
            raise TimeParseError(
                f"{text[:40]!r} has no zone, and the adapter declares no zone or offset for it"
            )
        return moment.replace(tzinfo=zone)

    @staticmethod
    def _strptime(text: str, pattern: str) -> datetime:
        try:
            return datetime.strptime(text, pattern)  # the zone is applied by the caller
        except ValueError:
            raise TimeParseError(f"{text[:40]!r} does not match {pattern!r}") from None


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return f"text {value[:40]!r}"
    return f"the number {value!r}"
