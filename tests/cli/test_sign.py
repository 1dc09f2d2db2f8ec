"""``courier-gateway sign`` prints requests that a real ingress accepts, and fails cleanly.

Proved here, with the command run as a real process against the shared ``ingress`` fixture: the
printed curl command, executed by bash, gets HTTP 202 with ``acknowledged: true`` for each scheme
(``v1``, ``standard-webhooks``, ``legacy-body``), whether the key comes from ``SIGNING_SECRET``,
``SOURCES_FILE`` or ``--secret``; ``--json`` output is valid JSON whose headers work with httpx;
an event file is signed and sent byte for byte (shell quoting included); and bad input (an
unreadable or invalid event file, an unknown source, an invalid ``--secret``) ends with exit
code 2 and one stderr line naming the problem.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from courier_gateway.config import Key
from courier_gateway.config.sources import Scheme, decode_secret
from courier_gateway.signatures import verify
from tests.support.servers import GatewayProcess
from tests.support.signing import event
from tests.support.sources import COURIER_SECRET, DHL_SECRET, LEGACY_SECRET

SECRETS = {"courier": COURIER_SECRET, "dhl": DHL_SECRET, "legacy": LEGACY_SECRET}
SCHEMES = {"courier": Scheme.V1, "dhl": Scheme.STANDARD_WEBHOOKS, "legacy": Scheme.LEGACY_BODY}


def sign(
    *args: str | Path, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``courier-gateway sign ARGS`` with exactly ``env`` plus PATH, in ``cwd``.

    The default directory has no ``.data``: a checkout where ``make dev`` runs must not leak in.
    """
    return subprocess.run(
        [sys.executable, "-m", "courier_gateway", "sign", *map(str, args)],
        env={"PATH": os.environ["PATH"], **env},
        cwd=cwd or Path(__file__).parent,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def configured(ingress: GatewayProcess) -> dict[str, str]:
    """The environment of an operator next to the shared ingress: its sources and its port."""
    return {"SOURCES_FILE": ingress.env["SOURCES_FILE"], "API_PORT": ingress.env["API_PORT"]}


def curl_output(result: subprocess.CompletedProcess[str]) -> str:
    """The printed curl command (several lines when the quoted body has line breaks)."""
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("curl "), result.stdout
    assert result.stdout.endswith("\n"), result.stdout
    return result.stdout.removesuffix("\n")


def run_curl(command: str) -> tuple[int, dict[str, Any]]:
    """Execute the printed command with bash; return the HTTP status and the JSON answer."""
    completed = subprocess.run(
        ["bash", "-c", command + " --write-out '\\n%{http_code}'"],
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    body, _, status = completed.stdout.rpartition(b"\n")
    return int(status), json.loads(body)


def assert_accepted(status: int, answer: dict[str, Any], source: str) -> None:
    assert status == 202, answer
    assert answer["acknowledged"] is True, answer
    assert answer["queued"] is True and answer["duplicate"] is False
    assert answer["idempotencyKey"] == f"{source}:{answer['eventId']}"


def assert_usage_error(
    result: subprocess.CompletedProcess[str],
    *mentions: str,
    label: str = "courier-gateway sign: usage error: ",
) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(label), lines[0]
    for mention in mentions:
        assert mention in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("source", ["courier", "dhl", "legacy"])
def test_printed_curl_is_accepted_for_each_scheme(ingress: GatewayProcess, source: str) -> None:
    command = curl_output(sign("--source", source, env=configured(ingress)))
    assert "\n" not in command  # a generated event is compact: one line to copy
    assert f"{ingress.url}/v1/events/{source}" in command
    header = "webhook-signature" if SCHEMES[source] is Scheme.STANDARD_WEBHOOKS else "x-signature"
    assert f"{header}: " in command
    status, answer = run_curl(command)
    assert_accepted(status, answer, source)


def test_signing_secret_signs_for_the_default_source(ingress: GatewayProcess) -> None:
    env = {"SIGNING_SECRET": COURIER_SECRET, "API_PORT": ingress.env["API_PORT"]}
    status, answer = run_curl(curl_output(sign(env=env)))
    assert_accepted(status, answer, "courier")


def test_explicit_secret_and_url_need_no_configuration(ingress: GatewayProcess) -> None:
    args = ("--secret", DHL_SECRET, "--scheme", "standard-webhooks", "--source", "dhl")
    result = sign(*args, "--url", ingress.url + "/", env={})
    status, answer = run_curl(curl_output(result))
    assert_accepted(status, answer, "dhl")


@pytest.mark.parametrize(
    ("source", "algorithm"),
    [("courier", "hmac-sha512"), ("dhl", "hmac-sha256"), ("legacy", "hmac-sha256")],
)
def test_json_output_works_with_httpx(ingress: GatewayProcess, source: str, algorithm: str) -> None:
    result = sign("--source", source, "--algorithm", algorithm, "--json", env=configured(ingress))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert set(document) == {"url", "headers", "body"}
    assert document["url"] == f"{ingress.url}/v1/events/{source}"
    assert document["headers"]["content-type"] == "application/json"
    assert json.loads(document["body"])["source"] == source
    if SCHEMES[source] is not Scheme.STANDARD_WEBHOOKS:
        assert document["headers"]["x-signature-algorithm"] == algorithm
    response = httpx.post(
        document["url"], content=document["body"].encode(), headers=document["headers"], timeout=10
    )
    assert response.status_code == 202, response.text
    assert response.json()["acknowledged"] is True


def event_file(path: Path) -> bytes:
    """An event with indentation, a trailing newline, non-ASCII text and shell metacharacters."""
    document = event(source="courier")
    document["payload"]["note"] = 'it\'s "fragile" — ünïcode $HOME `id` \\n ; & | *'
    raw = (json.dumps(document, indent=3, ensure_ascii=False) + "\n").encode()
    path.write_bytes(raw)
    return raw


def test_event_file_is_signed_byte_exactly(ingress: GatewayProcess, tmp_path: Path) -> None:
    raw = event_file(tmp_path / "event.json")
    result = sign(tmp_path / "event.json", "--json", env=configured(ingress))
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["body"].encode() == raw
    headers = {name.lower(): value for name, value in document["headers"].items()}
    key_id = verify(
        Scheme.V1,
        [Key("k1", decode_secret(Scheme.V1, COURIER_SECRET))],
        lambda name: [headers[name]] if name in headers else [],
        raw,
        now=time.time(),
        tolerance_seconds=300,
    )
    assert key_id == "k1"


def test_event_file_survives_the_shell_in_the_curl_command(
    ingress: GatewayProcess, tmp_path: Path
) -> None:
    raw = event_file(tmp_path / "event.json")
    command = curl_output(sign(tmp_path / "event.json", env=configured(ingress)))
    status, answer = run_curl(command)
    # The ingress verifies the signature over the bytes it received: 202 means they are ``raw``.
    assert_accepted(status, answer, "courier")
    assert answer["eventId"] == json.loads(raw)["eventId"]


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_unreadable_event_file(ingress: GatewayProcess, tmp_path: Path, kind: str) -> None:
    path = tmp_path / "absent.json"
    if kind == "directory":
        path = tmp_path
    line = assert_usage_error(sign(path, env=configured(ingress)), str(path), "cannot be read")
    assert ("No such file" in line) if kind == "missing" else ("directory" in line)


@pytest.mark.parametrize("content", [b"{not json", b"", b"\xff\xfe{}"])
def test_invalid_json_event_file(ingress: GatewayProcess, tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "event.json"
    path.write_bytes(content)
    assert_usage_error(sign(path, env=configured(ingress)), str(path), "not valid JSON")


def test_unknown_source_without_secret(ingress: GatewayProcess) -> None:
    assert_usage_error(sign("--source", "ups", env=configured(ingress)), "--source", "'ups'")


def test_no_secret_and_nothing_configured() -> None:
    line = assert_usage_error(
        sign(env={}), "SIGNING_SECRET", label="courier-gateway: configuration error: "
    )
    assert "SOURCES_FILE" in line


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("not-a-whsec-secret", "whsec_"),
        ("whsec_***not base64***", "base64"),
        ("whsec_c2hvcnQ=", "16 bytes"),
    ],
)
def test_secret_invalid_for_standard_webhooks(secret: str, problem: str) -> None:
    result = sign("--scheme", "standard-webhooks", "--secret", secret, env={})
    line = assert_usage_error(result, "--secret", problem)
    assert secret not in line


def test_short_secret_for_v1() -> None:
    assert_usage_error(sign("--secret", "abc", env={}), "--secret", "8 characters")


def test_explicit_secret_keeps_the_configured_scheme_of_the_source(ingress: GatewayProcess) -> None:
    # ``--secret`` replaces the key only: dhl is configured as standard-webhooks, so the request
    # must be signed that way, or the printed command is refused by the gateway it targets.
    result = sign("--source", "dhl", "--secret", DHL_SECRET, env=configured(ingress))
    status, answer = run_curl(curl_output(result))
    assert_accepted(status, answer, "dhl")


def test_send_posts_with_the_newest_key_of_a_mounted_directory(
    ingress: GatewayProcess, tmp_path: Path
) -> None:
    """What the chart's ``helm test`` pod does: sign with the Secret's newest key and post."""
    keys = tmp_path / "keys"
    keys.mkdir()
    (keys / "k20260101000000-aaaa").write_text("an-old-key-that-is-not-configured")
    (keys / "k20261125000000-bbbb").write_text(COURIER_SECRET + "\n")
    (keys / "..data").mkdir()  # the kubelet's bookkeeping is not a key
    result = sign(
        "--send", "--source", "courier", "--secret-file", keys, "--url", ingress.url, env={}
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("202 ")


def test_send_reports_a_refusal_with_exit_code_1(ingress: GatewayProcess, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("a-key-the-gateway-does-not-know")
    result = sign("--send", "--secret-file", key, "--url", ingress.url, env={})
    assert result.returncode == 1
    assert result.stdout.startswith("401 ")


def test_secret_file_problems_are_named(tmp_path: Path) -> None:
    assert_usage_error(sign("--secret-file", tmp_path, env={}), "holds no key file")
    missing = tmp_path / "missing"
    assert_usage_error(sign("--secret-file", missing, env={}), "cannot be read")


def test_sample_options_shape_the_generated_event(ingress: GatewayProcess) -> None:
    env = {"SIGNING_SECRET": COURIER_SECRET, "API_PORT": ingress.env["API_PORT"]}
    result = sign(
        "--event-id", "evt_shaped_1", "--status", "teleported", "--shipment-id", "shp_s1",
        "--json", env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    body = json.loads(json.loads(result.stdout)["body"])
    assert body["eventId"] == "evt_shaped_1"
    assert body["payload"]["status"] == "teleported"
    assert body["payload"]["shipmentId"] == "shp_s1"
    assert body["eventType"] == "shipment.status.updated"


def test_sample_options_with_an_event_file_are_a_usage_error(tmp_path: Path) -> None:
    event_file(tmp_path / "event.json")
    result = sign(tmp_path / "event.json", "--status", "delivered", env={"SIGNING_SECRET": "x" * 8})
    assert_usage_error(result, "--status", "EVENT_FILE")


def write_dev_env(directory: Path, variables: dict[str, str]) -> None:
    """What ``make dev`` leaves in a checkout: ``.data/env`` (see devstack/envfile.py)."""
    from courier_gateway.devstack.envfile import write_env_file

    (directory / ".data").mkdir()
    write_env_file(directory / ".data", variables)


def test_dev_env_file_gives_the_stacks_port_and_secret(
    ingress: GatewayProcess, tmp_path: Path
) -> None:
    write_dev_env(
        tmp_path,
        {"API_PORT": ingress.env["API_PORT"], "SOURCES_FILE": ingress.env["SOURCES_FILE"]},
    )
    result = sign("--send", "--source", "dhl", env={}, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("202 ")
    # A variable set in the environment wins over the file.
    result = sign("--json", env={"API_PORT": "4321"}, cwd=tmp_path)
    assert json.loads(result.stdout)["url"] == "http://127.0.0.1:4321/v1/events/courier"


def test_another_stack_in_the_environment_ignores_the_dev_env_file(tmp_path: Path) -> None:
    write_dev_env(tmp_path, {"API_PORT": "4000", "SIGNING_SECRET": COURIER_SECRET})
    result = sign("--json", env={"REDIS_URL": "redis://elsewhere:6379/0"}, cwd=tmp_path)
    # Neither the file's port nor its secret: the environment describes another stack.
    assert_usage_error(result, "SIGNING_SECRET", label="courier-gateway: configuration error: ")


def test_a_stopped_stacks_secret_still_signs(ingress: GatewayProcess, tmp_path: Path) -> None:
    (tmp_path / ".data").mkdir()
    (tmp_path / ".data" / "signing-secret").write_text(COURIER_SECRET + "\n")
    result = sign("--url", ingress.url, env={}, cwd=tmp_path)
    status, answer = run_curl(curl_output(result))
    assert_accepted(status, answer, "courier")
