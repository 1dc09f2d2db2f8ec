"""Loading adapters: a broken file is refused with its path and the field; ``extends`` and a file
named like a built-in change a built-in without copying it; ADAPTERS_DIR changes are picked up at
run time, and a broken change keeps the last good adapter."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest

from courier_gateway.adapters import AdapterError, load_adapter_file, load_registry
from courier_gateway.adapters.mapping import Mapped, Unmapped

MINIMAL = """
name: acme
title: ACME Parcels
verify:
  - {type: token, header: x-acme-token}
event:
  eventId: body.id
  occurredAt: {value: body.at, format: rfc3339}
  shipmentId: body.parcel
  status:
    value: body.state
    map: {MOVING: in_transit, DONE: delivered}
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def refusal(directory: Path) -> str:
    with pytest.raises(AdapterError) as caught:
        load_registry(directory)
    return str(caught.value)


def test_a_custom_adapter_loads_next_to_the_built_ins(tmp_path: Path) -> None:
    write(tmp_path, "acme.yaml", MINIMAL)
    write(tmp_path, ".hidden.yaml", "not: an adapter")  # Kubernetes' ..data entries are hidden
    registry = load_registry(tmp_path)
    adapter = registry.get("acme")
    assert adapter is not None
    assert adapter.origin == f"ADAPTERS_DIR {tmp_path / 'acme.yaml'}"
    assert {"acme", "fedex", "v1"} <= set(registry.names())
    body = json.dumps({"id": "a1", "at": "2026-01-01T10:00:00Z", "parcel": "P1", "state": "DONE"})
    (result,) = adapter.map_body(body.encode(), source="acme", default_source="courier").results
    assert isinstance(result, Mapped)
    assert result.event["payload"] == {"shipmentId": "P1", "status": "delivered"}
    assert adapter.success_status == 202


@pytest.mark.parametrize(
    ("text", "mentions"),
    [
        ("name: acme\ntitle: [unclosed\n", "acme.yaml: not valid YAML"),
        ("- a list\n", "must be a YAML mapping"),
        ("title: no name\n", "name: is required"),
        (MINIMAL.replace("type: token", "type: telepathy"), "verify.0"),
        (
            MINIMAL.replace("shipmentId: body.parcel", "shipmentId: body.[parcel"),
            "event.shipmentId: not a valid JMESPath",
        ),
        (
            MINIMAL.replace("DONE: delivered", "DONE: teleported"),
            "event.status.map.DONE: 'teleported' is not a shipment status",
        ),
        (MINIMAL.replace("  eventId: body.id\n", ""), "give eventId or idempotencyKey"),
        (
            MINIMAL.replace("format: rfc3339", "format: rfc3339, zone: Mars/Base"),
            "event.occurredAt.zone: unknown time zone",
        ),
        (
            MINIMAL.replace("verify:\n  - {type: token, header: x-acme-token}", "verify: []"),
            "allowUnauthenticated",
        ),
        (
            MINIMAL.replace(
                "{type: token, header: x-acme-token}",
                "{type: hmac, signature: {header: s}, signedPayload: '{bdy}'}",
            ),
            "verify.0: unknown placeholder '{bdy}'",
        ),
        (
            MINIMAL.replace(
                "{type: token, header: x-acme-token}",
                "{type: hmac, signature: {header: s}, signedPayload: '{timestamp}.{body}'}",
            ),
            "verify.0: signedPayload uses {timestamp}: declare 'timestamp'",
        ),
        (
            MINIMAL.replace(
                "{type: token, header: x-acme-token}", "{type: source-ip, cidrs: [10.0.0.300/8]}"
            ),
            "verify.0",
        ),
        (MINIMAL + "surprise: 1\n", "surprise: Extra inputs are not permitted"),
        (MINIMAL + "extends: nothing-like-this\n", "extends: no adapter named 'nothing-like-this'"),
    ],
)
def test_a_broken_file_is_refused_naming_file_and_field(
    tmp_path: Path, text: str, mentions: str
) -> None:
    write(tmp_path, "acme.yaml", text)
    message = refusal(tmp_path)
    assert str(tmp_path / "acme.yaml") in message
    assert mentions in message


def test_two_files_with_one_name_are_refused(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", MINIMAL)
    write(tmp_path, "b.yaml", MINIMAL)
    assert "'acme' is also defined in" in refusal(tmp_path)


def test_extends_adds_to_a_built_in_status_map(tmp_path: Path) -> None:
    sample = load_registry(None).get("fedex")
    assert sample is not None and sample.document.sample is not None
    body = sample.document.sample.replace('"derivedStatusCode": "AR"', '"derivedStatusCode": "ZZ"')
    before = sample.map_body(body.encode(), source="fx", default_source="courier")
    assert [type(r).__name__ for r in before.results] == ["Mapped", "Unmapped", "Mapped"]
    # A file with the built-in's own name replaces it, starting from it.
    write(
        tmp_path,
        "fedex.yaml",
        """
        name: fedex
        extends: fedex
        event:
          status:
            map: {ZZ: at_hub}
        """,
    )
    fixed = load_registry(tmp_path).get("fedex")
    assert fixed is not None
    assert fixed.origin.startswith("ADAPTERS_DIR")
    after = fixed.map_body(body.encode(), source="fx", default_source="courier")
    assert all(isinstance(r, Mapped) for r in after.results)
    assert after.results[1].event["payload"]["status"] == "at_hub"  # type: ignore[union-attr]
    # Everything else is the built-in's: the same keys, the same verification.
    keys_after = [r.event["idempotencyKey"] for r in after.results if isinstance(r, Mapped)]
    keys_before = [
        r.event["idempotencyKey"] for r in before.results if isinstance(r, Mapped | Unmapped)
    ]
    assert keys_after == keys_before
    assert fixed.document.verify == sample.document.verify


def test_extends_another_name_and_a_file_being_written(tmp_path: Path) -> None:
    write(tmp_path, "acme.yaml", MINIMAL)
    draft = write(
        tmp_path / "..",
        "acme-eu.yaml",
        """
        name: acme-eu
        extends: acme
        title: ACME Parcels EU
        response: 200
        """,
    )
    registry = load_registry(tmp_path)
    adapter = load_adapter_file(draft, registry)
    assert adapter.name == "acme-eu"
    assert adapter.success_status == 200
    assert adapter.document.event == registry.get("acme").document.event  # type: ignore[union-attr]
    os.remove(draft)


def test_reload_picks_up_changes_and_keeps_the_last_good_version(tmp_path: Path) -> None:
    path = write(tmp_path, "acme.yaml", MINIMAL)
    registry = load_registry(tmp_path)
    assert registry.reload() is False
    path.write_text(
        textwrap.dedent(MINIMAL).replace("DONE: delivered}", "DONE: delivered, LOST: exception}")
    )
    os.utime(path, ns=(1, 10**18))
    assert registry.reload() is True
    adapter = registry.get("acme")
    assert adapter is not None
    assert adapter.document.event is not None and "LOST" in adapter.document.event.status.map
    path.write_text("name: acme\ntitle: [broken")
    os.utime(path, ns=(1, 2 * 10**18))
    assert registry.reload() is False
    assert registry.get("acme") is adapter  # the last good version stays
    write(tmp_path, "zeta.yaml", MINIMAL.replace("name: acme", "name: zeta"))
    path.write_text(textwrap.dedent(MINIMAL))
    os.utime(path, ns=(1, 3 * 10**18))
    assert registry.reload() is True
    assert registry.get("zeta") is not None


def test_adapters_dir_must_be_a_directory(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match="is not a directory"):
        load_registry(tmp_path / "missing")


def test_an_unmapped_item_is_re_mapped_from_its_original_by_the_fixed_adapter(
    tmp_path: Path,
) -> None:
    registry = load_registry(None)
    dhl = registry.get("dhl")
    assert dhl is not None and dhl.document.sample is not None
    sent = json.loads(dhl.document.sample)
    sent["shipments"][0]["events"][1]["statusCode"] = "handed-over"
    results = dhl.map_body(
        json.dumps(sent).encode(), source="dhl-eu", default_source="courier"
    ).results
    (unmapped,) = [r for r in results if isinstance(r, Unmapped)]
    # Still unmapped with the adapter as it was.
    again = dhl.remap(unmapped.original, source="dhl-eu")
    assert isinstance(again, Unmapped)
    assert again.event == unmapped.event
    write(
        tmp_path,
        "dhl.yaml",
        "name: dhl\nextends: dhl\nevent:\n  status:\n    map: {handed-over: in_transit}\n",
    )
    fixed = load_registry(tmp_path).get("dhl")
    assert fixed is not None
    remapped = fixed.remap(unmapped.original, source="dhl-eu")
    assert isinstance(remapped, Mapped)
    # The same event (ids, key, time), now with its status.
    assert remapped.event["idempotencyKey"] == unmapped.event["idempotencyKey"]
    assert remapped.event["eventId"] == unmapped.event["eventId"]
    assert remapped.event["occurredAt"] == unmapped.event["occurredAt"]
    assert remapped.event["payload"] == {**unmapped.event["payload"], "status": "in_transit"}
