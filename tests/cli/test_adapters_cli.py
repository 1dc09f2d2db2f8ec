"""``courier-gateway adapters list|check`` and ``sign --adapter``, run as real processes.

``check`` prints the canonical events of a payload (or the 400 the ingress would give, exit 1),
verifies a captured request when given a key, and takes an adapter file being written; ``sign
--adapter`` prints a request that the adapter's own verification accepts; configuration mistakes
end with exit code 2 and one line naming them.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from courier_gateway.adapters import Inbound, Secret, builtin_registry

KEY = "ship24-webhook-secret-1"


def cli(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "courier_gateway", *map(str, args)],
        env={"PATH": os.environ["PATH"], **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_list_names_every_adapter_and_custom_ones(tmp_path: Path) -> None:
    (tmp_path / "acme.yaml").write_text("name: acme\ntitle: ACME\nextends: ship24\n")
    result = cli("adapters", "list", "--json", env={"ADAPTERS_DIR": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == {*builtin_registry().names(), "acme"}
    assert rows["acme"]["origin"] == f"ADAPTERS_DIR {tmp_path / 'acme.yaml'}"
    assert rows["ship24"]["handshake"] == ["HEAD"]
    assert rows["ups"]["success"] == 200
    text = cli("adapters", "list")
    assert "fedex" in text.stdout
    assert "unconfirmed" in text.stdout


def test_check_prints_the_canonical_events(tmp_path: Path) -> None:
    adapter = builtin_registry().get("ship24")
    assert adapter is not None and adapter.document.sample is not None
    payload = tmp_path / "body.json"
    payload.write_text(adapter.document.sample)
    result = cli("adapters", "check", "ship24", payload, "--source", "s24")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [e["payload"]["status"] for e in report["events"]] == ["out_for_delivery", "delivered"]
    assert report["events"][0]["idempotencyKey"] == "s24:d4a9e5f2-0b1c-4e2a-9f3d-5c6b7a8d9e01"
    verified = cli(
        "adapters",
        "check",
        "ship24",
        payload,
        "--secret",
        KEY,
        "--header",
        f"Authorization: Bearer {KEY}",
    )
    assert json.loads(verified.stdout)["verified"] == {"keyId": "cli"}
    forged = cli(
        "adapters",
        "check",
        "ship24",
        payload,
        "--secret",
        KEY,
        "--header",
        "Authorization: Bearer nope",
    )
    assert forged.returncode == 1
    assert "401 INVALID_SIGNATURE: header authorization (bearer) does not match" in forged.stderr


def test_check_reports_a_structural_error_as_the_ingress_would(tmp_path: Path) -> None:
    payload = tmp_path / "body.json"
    payload.write_text('{"trackings": {"not": "a list"}}')
    result = cli("adapters", "check", "ship24", payload)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "courier-gateway adapters check: 400 INVALID_PAYLOAD:"
        " split.0 (body.trackings): expected a list, got an object"
    )


def test_check_takes_an_adapter_file_being_written(tmp_path: Path) -> None:
    draft = tmp_path / "draft.yaml"
    draft.write_text(
        "name: draft\ntitle: Draft\nverify: [{type: token, header: x-t}]\n"
        "event:\n  eventId: body.id\n  occurredAt: {value: body.at, format: unix-seconds}\n"
        "  shipmentId: body.ref\n  status: {value: body.s, map: {ok: delivered}}\n"
    )
    payload = tmp_path / "body.json"
    payload.write_text('{"id": "e1", "at": 1700000000, "ref": "R1", "s": "huh"}')
    result = cli("adapters", "check", draft, payload)
    assert result.returncode == 0, result.stderr
    (unmapped,) = json.loads(result.stdout)["unmapped"]
    assert unmapped["message"] == "status 'huh' is not in the adapter's status map"
    assert unmapped["original"] == {"body": {"id": "e1", "at": 1700000000, "ref": "R1", "s": "huh"}}
    draft.write_text("name: draft\ntitle: Draft\nverify: []\n")
    broken = cli("adapters", "check", draft, payload)
    assert broken.returncode == 2
    assert broken.stderr.startswith(f"courier-gateway: configuration error: {draft}: ")


def test_sign_adapter_prints_a_request_the_adapter_accepts() -> None:
    for name, alternative, secret in [
        ("shippo", 0, "shippo-hmac-secret"),
        ("shippo", 1, "url-token-123"),
        ("ship24", 0, KEY),
    ]:
        result = cli(
            "sign",
            "--adapter",
            name,
            "--alternative",
            str(alternative),
            "--secret",
            secret,
            "--json",
        )
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        assert document["url"].startswith(f"http://127.0.0.1:3000/v1/events/{name}")
        query = dict(
            part.split("=", 1) for part in document["url"].partition("?")[2].split("&") if part
        )
        headers = {k.lower(): v for k, v in document["headers"].items()}
        request = Inbound(
            document["body"].encode(),
            lambda n, h=headers: [h[n]] if n in h else [],
            lambda n, q=query: [q[n]] if n in q else [],
        )
        adapter = builtin_registry().get(name)
        assert adapter is not None
        assert adapter.verify(request, [Secret("k", secret)], now=time.time(), tolerance=300) == "k"
    curl = cli(
        "sign", "--adapter", "fedex", "--secret", "fedex-security-token", "--url", "http://gw:8080"
    )
    assert shlex.split(curl.stdout)[:5] == [
        "curl",
        "-sS",
        "-X",
        "POST",
        "http://gw:8080/v1/events/fedex",
    ]


def test_sign_adapter_refuses_clearly() -> None:
    unknown = cli("sign", "--adapter", "pigeon-post", "--secret", "x" * 10)
    assert unknown.returncode == 2
    assert "--adapter: no adapter named 'pigeon-post'" in unknown.stderr
    missing = cli("sign", "--adapter", "fedex")
    assert missing.returncode == 2
    assert "--secret: required with --adapter" in missing.stderr
    short = cli("sign", "--adapter", "fedex", "--secret", "short")
    assert short.returncode == 2
    assert "--secret: a secret must be at least 8 characters" in short.stderr


def test_a_broken_adapter_file_stops_the_ingress_naming_file_and_field(tmp_path: Path) -> None:
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    (adapters / "fedex.yaml").write_text(
        "name: fedex\nextends: fedex\nevent:\n  status:\n    map: {PX: teleported}\n"
    )
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        "sources:\n  fedex:\n    adapter: fedex\n    secrets: [{id: k1, value: a-fedex-token-1}]\n"
    )
    result = cli(
        "ingress",
        env={
            "REDIS_URL": "redis://127.0.0.1:1/0",  # never contacted: start-up stops first
            "SOURCES_FILE": str(sources),
            "ADAPTERS_DIR": str(adapters),
        },
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"courier-gateway: configuration error: ADAPTERS_DIR {adapters / 'fedex.yaml'}:"
        " event.status.map.PX: 'teleported' is not a shipment status (one of at_hub, cancelled,"
        " created, customs_hold, delivered, delivery_failed, exception, ignore, in_transit,"
        " label_created, on_hold, out_for_delivery, picked_up, returned, returning)"
    )
    sources.write_text(
        "sources:\n  acme:\n    adapter: acme\n    secrets: [{id: k1, value: a-token-123}]\n"
    )
    (adapters / "fedex.yaml").unlink()
    unknown = cli(
        "ingress", env={"REDIS_URL": "redis://127.0.0.1:1/0", "SOURCES_FILE": str(sources)}
    )
    assert unknown.returncode == 2
    assert (
        f"SOURCES_FILE {sources}: sources.acme.adapter: no adapter named 'acme'" in unknown.stderr
    )
