"""One time format for everything the gateway prints: RFC 3339 in UTC, to the millisecond.

Stored times come back as datetimes from MongoDB, but as text from the embedded store (it keeps
a ``$set`` datetime as ``2026-11-30 00:00:01.773000``) and as ISO text from the envelope
(``…+00:00``, ``…Z``). Whatever the form, operators see ``2026-11-30T00:00:01.773Z``.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["as_utc", "rfc3339"]


def as_utc(value: object) -> datetime:
    """A stored or printed time (datetime or text) as an aware UTC datetime.

    A time without a zone is UTC: that is how MongoDB and the gateway store them.
    Raise ``ValueError`` for anything that is not a time.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    else:
        raise ValueError(f"not a time: {value!r}")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def rfc3339(value: object) -> str:
    """``value`` as ``YYYY-MM-DDTHH:MM:SS.mmmZ``; text that is not a time is returned as is."""
    try:
        moment = as_utc(value)
    except ValueError:
        return str(value)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
