"""Mapping rules beyond the built-ins' samples: history latest, item rules, limits, fallbacks and
the errors that name the item; the canonical adapters map exactly as ``parse_event`` does."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from courier_gateway.adapters import (
    Adapter,
    Mapped,
    PayloadError,
    Unmapped,
    builtin_registry,
    load_adapter_file,
)
from courier_gateway.events import EventError, parse_event

SCANS = """
name: scans
title: Scans
verify: [{type: token, header: x-t}]
maxEvents: 6
split:
  - {each: body.parcels, as: parcel}
  - {each: parcel.scans, as: scan, history: HISTORY}
ignoreItems:
  - {when: "scan.code == 'INFO'", reason: informational scan}
event:
  idempotencyKey: {digest: [parcel.ref, scan.at, scan.code]}
  occurredAt: {value: scan.at, format: unix-seconds}
  shipmentId: parcel.ref
  orderId: parcel.order
  eventType: "scan.type || 'shipment.status.updated'"
  carrierStatusCode: scan.code
  status: {value: scan.code, map: {PU: picked_up, IT: in_transit, DL: delivered, X: ignore}}
"""


def adapter(tmp_path: Path, history: str = "all", text: str = SCANS) -> Adapter:
    path = tmp_path / "scans.yaml"
    path.write_text(textwrap.dedent(text).replace("HISTORY", history))
    return load_adapter_file(path, builtin_registry())


def run(adapter: Adapter, body: Any) -> list[Any]:
    return adapter.map_body(json.dumps(body).encode(), source="s", default_source="courier").results


def scans(*codes_and_times: tuple[str, Any], ref: str = "P1", order: Any = "o-1") -> dict[str, Any]:
    return {
        "parcels": [
            {
                "ref": ref,
                "order": order,
                "scans": [{"code": c, "at": t} for c, t in codes_and_times],
            }
        ]
    }


def test_history_all_maps_every_entry_with_stable_keys(tmp_path: Path) -> None:
    first = run(adapter(tmp_path), scans(("PU", 100_000), ("IT", 200_000)))
    again = run(adapter(tmp_path), scans(("IT", 200_000), ("PU", 100_000), ("DL", 300_000)))
    keys = {r.event["idempotencyKey"] for r in first}
    assert keys < {r.event["idempotencyKey"] for r in again}  # the resent entries keep their keys
    assert [r.event["payload"]["status"] for r in again] == ["in_transit", "picked_up", "delivered"]


def test_history_latest_keeps_the_newest_per_parent_and_every_untimed_one(tmp_path: Path) -> None:
    body = scans(("IT", 200_000), ("DL", 300_000), ("PU", 100_000), ("IT", None))
    body["parcels"].append(
        {"ref": "P2", "scans": [{"code": "PU", "at": 5_000_000}, {"code": "IT", "at": 4_000_000}]}
    )
    results = run(adapter(tmp_path, "latest"), body)
    mapped = [r for r in results if isinstance(r, Mapped)]
    assert [(r.event["payload"]["shipmentId"], r.event["payload"]["status"]) for r in mapped] == [
        ("P1", "delivered"),
        ("P2", "picked_up"),
    ]
    (untimed,) = [r for r in results if isinstance(r, Unmapped)]
    assert untimed.check == "occurredAt"


def test_item_rules_and_ignored_statuses(tmp_path: Path) -> None:
    results = run(adapter(tmp_path), scans(("INFO", 100_000), ("X", 100_001), ("PU", 100_002)))
    assert [type(r).__name__ for r in results] == ["Ignored", "Ignored", "Mapped"]
    assert results[0].reason == "informational scan"
    assert results[1].reason == "status 'X' is mapped to ignore"


def test_more_items_than_max_events_is_refused_whole(tmp_path: Path) -> None:
    with pytest.raises(PayloadError, match="the request holds 7 events; this adapter takes 6"):
        run(adapter(tmp_path), scans(*[("PU", 100_000 + i) for i in range(7)]))


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("o-1", {"orderId": "o-1"}),
        (77, {"orderId": "77"}),
        ("Order 000123", {"orderReference": "Order 000123"}),
        ("", {}),
        (None, {}),
    ],
)
def test_order_ids_that_are_not_ids_are_kept_as_order_reference(
    tmp_path: Path, order: Any, expected: dict[str, str]
) -> None:
    (result,) = run(adapter(tmp_path), scans(("PU", 100_000), order=order))
    payload = result.event["payload"]
    assert {k: v for k, v in payload.items() if k in {"orderId", "orderReference"}} == expected


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        (
            scans(("PU", 100_000), ref="has space"),
            "event.shipmentId at parcel[0].scan[0]: 'parcel.ref' must give 1-128",
        ),
        (
            {"parcels": [{"ref": "P1", "scans": "PU"}]},
            "split.1 (parcel.scans) at parcel[0]: expected a list, got text",
        ),
        ({"parcels": None}, "split.0 (body.parcels): expected a list, got nothing"),
        (
            {
                "parcels": [
                    {
                        "ref": "P1",
                        "scans": [{"code": "PU", "at": 1_000_000, "type": "Shipment Update"}],
                    }
                ]
            },
            "event.eventType at parcel[0].scan[0]",
        ),
        (
            {
                "parcels": [
                    {
                        "ref": "P1",
                        "scans": [{"code": "PU", "at": 1_000_000}],
                        "order": {"$where": 1},
                    }
                ]
            },
            "payload.orderReference at parcel[0].scan[0]: key '$where'",
        ),
    ],
)
def test_structural_problems_name_the_check_and_the_item(
    tmp_path: Path, body: Any, mentions: str
) -> None:
    with pytest.raises(PayloadError) as caught:
        run(adapter(tmp_path), body)
    assert mentions in str(caught.value)


def test_a_failing_function_is_a_400_naming_the_expression(tmp_path: Path) -> None:
    text = SCANS.replace("carrierStatusCode: scan.code", "carrierStatusCode: lower(scan.code)")
    with pytest.raises(PayloadError, match=r"expression at parcel\[0\].scan\[0\]: lower\(\)"):
        run(
            adapter(tmp_path, text=text),
            {"parcels": [{"ref": "P1", "scans": [{"code": 5, "at": 1_000_000}]}]},
        )


def test_bodies_that_are_not_json_objects_or_lists(tmp_path: Path) -> None:
    scan = adapter(tmp_path)
    for raw, mentions in [
        (b"{not json", "body: not valid JSON"),
        (b'"text"', "body: must be a JSON object or list"),
    ]:
        with pytest.raises(PayloadError, match=mentions):
            scan.map_body(raw, source="s", default_source="courier")


@pytest.mark.parametrize(
    "raw",
    [
        b'{"eventId":"e1","eventType":"shipment.status.updated","occurredAt":"2026-01-01T00:00:00Z","payload":{"shipmentId":"s","status":"in_transit","extra":{"a":1}}}',
        b'{"eventId":"e1","eventType":"shipment.status.updated","occurredAt":"2026-01-01T00:00:00","payload":{"shipmentId":"s","status":"in_transit"}}',
        b'{"eventId":"e1","source":"other","eventType":"x","occurredAt":"2026-01-01T00:00:00Z","payload":{"shipmentId":"s","status":"in_transit"}}',
        b"[]",
        b"{",
    ],
)
@pytest.mark.parametrize("scheme", ["v1", "standard-webhooks", "legacy-body"])
def test_canonical_adapters_map_exactly_as_parse_event(scheme: str, raw: bytes) -> None:
    canonical = builtin_registry().get(scheme)
    assert canonical is not None
    try:
        expected: Any = parse_event(raw, "dhl", default_source="courier").to_wire()
    except EventError as error:
        expected = str(error)
    try:
        (result,) = canonical.map_body(raw, source="dhl", default_source="courier").results
        assert isinstance(result, Mapped)
        got: Any = result.event
    except PayloadError as error:
        got = str(error)
    assert got == expected
