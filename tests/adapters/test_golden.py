"""Golden tests: each built-in adapter turns its provider's documented sample (and variants: other
topics, unknown statuses, zone-less times, batches, structural garbage) into exactly the canonical
events, unmapped items and refusals written in ``golden/<adapter>.json``.

The expectations were written from the providers' documentation (see each adapter's
``references``) and checked by hand: times converted to UTC, statuses through the status map,
carrier codes kept verbatim, derived keys stable.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from courier_gateway.adapters import builtin_registry
from courier_gateway.statuses import STATUSES
from tests.adapters.golden_support import GOLDEN, body_of, cases, outcome

REGISTRY = builtin_registry()
PROVIDERS = sorted(path.stem for path in GOLDEN.glob("*.json"))
CASES = [(name, case) for name in PROVIDERS for case in cases(name)]


def test_every_provider_adapter_has_golden_cases_from_its_sample() -> None:
    mapped = sorted(a.name for a in REGISTRY if not a.canonical)
    assert mapped == PROVIDERS
    assert set(mapped) >= {
        "aftership",
        "easypost",
        "shippo",
        "fedex",
        "ups",
        "ship24",
        "17track",
        "dhl",
    }
    for name in PROVIDERS:
        first = cases(name)[0]
        assert first["body"] == "sample", name
        assert first["expect"]["events"], f"{name}: the documented sample maps to events"


@pytest.mark.parametrize(("name", "case"), CASES, ids=[f"{n}: {c['name']}" for n, c in CASES])
def test_golden_case(name: str, case: dict[str, Any]) -> None:
    adapter = REGISTRY.get(name)
    assert adapter is not None
    got = outcome(adapter, body_of(adapter, case))
    assert got == case["expect"]
    for event in got.get("events", []):
        assert event["payload"]["status"] in STATUSES
        assert event["idempotencyKey"].startswith("carrier:")
        assert event["occurredAt"].endswith("Z")


def test_ship24_batch_of_three_trackings_with_two_events_each_is_six_events() -> None:
    case = next(c for c in cases("ship24") if c["name"] == "3 trackings x 2 events")
    events = case["expect"]["events"]
    assert len(events) == 6
    assert len({event["idempotencyKey"] for event in events}) == 6
    assert {event["payload"]["shipmentId"] for event in events} == {
        "S24BATCH0000",
        "S24BATCH0001",
        "S24BATCH0002",
    }


def test_unmapped_items_keep_the_providers_original_item() -> None:
    case = next(c for c in cases("dhl") if c["name"].startswith("an unknown status code"))
    (unmapped,) = case["expect"]["unmapped"]
    sent = case["body"]["shipments"][0]
    assert unmapped["original"]["event"] == sent["events"][1]
    # The parent is kept without the list that was split (it holds the item's siblings).
    assert "events" not in unmapped["original"]["shipment"]
    assert unmapped["original"]["shipment"]["id"] == sent["id"]
    assert "status" not in unmapped["event"]["payload"]


def test_golden_files_are_what_the_support_module_writes() -> None:
    # The files stay in the form the --write helper produces, so a reviewed diff is all a
    # deliberate change needs.
    for name in PROVIDERS:
        text = (GOLDEN / f"{name}.json").read_text()
        assert text == json.dumps(json.loads(text), indent=1, ensure_ascii=False) + "\n"
