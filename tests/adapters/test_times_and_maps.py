"""Event times in the carriers' formats, and status maps with tuple keys and wildcards."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from courier_gateway.adapters.statusmap import StatusMap, status_key
from courier_gateway.adapters.times import (
    TimeFormat,
    TimeParseError,
    TimeRule,
    format_utc,
    parse_offset,
    zone_named,
)

UTC_RFC = TimeRule(TimeFormat.RFC3339)


@pytest.mark.parametrize(
    ("rule", "value", "offset", "expected"),
    [
        (UTC_RFC, "2024-05-02T08:12:00-05:00", None, "2024-05-02T13:12:00Z"),
        (UTC_RFC, "2024-05-02T08:12:00.250Z", None, "2024-05-02T08:12:00.250000Z"),
        (UTC_RFC, "2024-05-02 08:12:00+02:00", None, "2024-05-02T06:12:00Z"),
        (
            TimeRule(TimeFormat.RFC3339, zone=UTC),
            "2021-03-04T17:12:57",
            None,
            "2021-03-04T17:12:57Z",
        ),
        (
            TimeRule(TimeFormat.RFC3339, zone=zone_named("Europe/Berlin")),
            "2024-07-01T12:00:00",
            None,
            "2024-07-01T10:00:00Z",
        ),
        (
            TimeRule(TimeFormat.RFC3339, zone=UTC),
            "2024-07-01T12:00:00",
            "-04.00",
            "2024-07-01T16:00:00Z",
        ),
        (TimeRule(TimeFormat.UNIX_SECONDS), 1712741696, None, "2024-04-10T09:34:56Z"),
        (TimeRule(TimeFormat.UNIX_SECONDS), "1712741696", None, "2024-04-10T09:34:56Z"),
        (
            TimeRule(TimeFormat.UNIX_MILLISECONDS),
            1712741696123,
            None,
            "2024-04-10T09:34:56.123000Z",
        ),
        (
            TimeRule(TimeFormat.COMPACT, zone=UTC),
            ["20240423", "135004"],
            None,
            "2024-04-23T13:50:04Z",
        ),
        (TimeRule(TimeFormat.COMPACT), ["20240423", "095004"], "-04.00", "2024-04-23T13:50:04Z"),
        (
            TimeRule(TimeFormat.STRPTIME, pattern="%d.%m.%Y %H:%M", zone=UTC),
            "23.04.2024 09:50",
            None,
            "2024-04-23T09:50:00Z",
        ),
    ],
)
def test_times(rule: TimeRule, value: Any, offset: str | None, expected: str) -> None:
    zone = parse_offset(offset) if offset else None
    assert format_utc(rule.parse(value, offset=zone)) == expected


@pytest.mark.parametrize(
    ("rule", "value", "mentions"),
    [
        (UTC_RFC, "2021-03-04T17:12:57", "has no zone"),
        (UTC_RFC, "yesterday", "not an ISO 8601"),
        (UTC_RFC, 1712741696, "expected text"),
        (UTC_RFC, "2024-02-30T10:00:00Z", "day is out of range"),
        (TimeRule(TimeFormat.UNIX_SECONDS), 1712741696123, "outside 1970-2200"),
        (TimeRule(TimeFormat.UNIX_SECONDS), True, "expected a unix time"),
        (TimeRule(TimeFormat.UNIX_SECONDS), 10**30, "outside 1970-2200"),
        (TimeRule(TimeFormat.COMPACT, zone=UTC), ["20240423", None], "missing"),
        (TimeRule(TimeFormat.COMPACT, zone=UTC), "2024-04-23", "YYYYMMDDHHMMSS"),
    ],
)
def test_times_that_cannot_be_read_say_why(rule: TimeRule, value: Any, mentions: str) -> None:
    with pytest.raises(TimeParseError, match=mentions):
        rule.parse(value)


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("-04.00", -240), ("+0530", 330), ("+02:00", 120), ("-4", -240), ("Z", 0), ("+00", 0)],
)
def test_offsets(text: str, minutes: int) -> None:
    zone = parse_offset(text)
    assert datetime(2024, 1, 1, tzinfo=zone).utcoffset() == timedelta(minutes=minutes)


@pytest.mark.parametrize("text", ["", "-25.00", "4h", "+02:75", True, None])
def test_bad_offsets(text: Any) -> None:
    with pytest.raises(TimeParseError):
        parse_offset(text)


def test_unknown_zone_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown time zone"):
        zone_named("Mars/Olympus")
    assert zone_named("utc") is UTC
    assert zone_named("America/Chicago").utcoffset(datetime(2024, 1, 1)) == timezone(
        timedelta(hours=-6)
    ).utcoffset(None)


UPS = StatusMap(
    {"M|*": "label_created", "D|OT": "out_for_delivery", "D|*": "delivered", "X|*": "exception"}
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["D", "FS"], "delivered"),
        (["D", "OT"], "out_for_delivery"),
        (["M", None], "label_created"),
        (["X", "ZZ"], "exception"),
        (["Q", "1"], None),
        ("D", None),
    ],
)
def test_tuple_keys_exact_first_then_wildcards_in_order(value: Any, expected: str | None) -> None:
    key = status_key(value)
    assert key is not None
    assert UPS.lookup(key) == expected


def test_wildcards_inside_a_part_and_case_folding() -> None:
    aftership = StatusMap(
        {"Exception_01*": "returning", "Exception*": "exception"}, ignore_case=True
    )
    assert aftership.lookup("exception_011") == "returning"
    assert aftership.lookup("EXCEPTION_003") == "exception"
    assert aftership.lookup("Delivered") is None
    assert status_key(3011) == "3011"
    assert status_key([None, None]) is None
    assert status_key(None) is None
    with pytest.raises(ValueError, match="status must be"):
        status_key({"code": "DL"})
