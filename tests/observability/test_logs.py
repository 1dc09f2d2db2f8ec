"""Structured logs of real processes: one JSON object per line, correlated, and free of secrets.

What is proved:

- Everything the ingress and the worker write, from start to stop, is one JSON object per line
  with ``ts``, ``level``, ``logger`` and ``msg``.
- An event sent with ``x-request-id`` has one "intake request" line at the ingress and one "job
  attempt" line at the worker, both naming it (``eventId``, ``source``) under the same
  ``traceId`` (the request id), each with its own ``spanId``, an outcome and ``durationMs``; a
  refused signature has its own "intake request" line with the failed check.
- Neither ``SIGNING_SECRET`` nor ``DOWNSTREAM_SIGNING_SECRET`` appears in either log, even after
  a bad-signature request and a signed downstream delivery; a configuration error about a secret
  (too short, in the environment or in a sources file) exits 2 with one line on stderr that
  names the problem but never echoes the secret.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import StartGateway
from tests.support.downstream import Downstream
from tests.support.servers import RedisServer, StoreServer, wait_for
from tests.support.signing import event, signed
from tests.support.stack import StackEnv

SPAN_ID = re.compile(r"^[0-9a-f]{16}$")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every non-empty line as a JSON object; fails naming the first line that is not one."""
    documents = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            document = json.loads(line)
        except json.JSONDecodeError:
            pytest.fail(f"log line {number} is not JSON: {line!r}")
        assert isinstance(document, dict), f"log line {number} is not an object: {line!r}"
        assert {"ts", "level", "logger", "msg"} <= document.keys(), line
        documents.append(document)
    return documents


def the_line(lines: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
    """The one line with all of ``fields``."""
    found = [line for line in lines if fields.items() <= line.items()]
    assert len(found) == 1, f"expected one line with {fields}, found {found}"
    return found[0]


def post(url: str, document: dict[str, Any], secret: str, request_id: str) -> httpx.Response:
    body, headers = signed(document, secret)
    return httpx.post(
        f"{url}/v1/events/courier",
        content=body,
        headers={**headers, "x-request-id": request_id},
        timeout=10,
    )


def test_logs_are_json_lines_correlated_by_trace_id_and_never_show_a_secret(
    start: StartGateway,
    redis_server: RedisServer,
    store_server: StoreServer,
    downstream: Downstream,
) -> None:
    signing_secret = f"intake-secret-{uuid.uuid4().hex}"
    downstream_secret = f"downstream-secret-{uuid.uuid4().hex}"
    stack = StackEnv.create(
        redis_server,
        store_server,
        SIGNING_SECRET=signing_secret,
        DOWNSTREAM_URL=downstream.url,
        DOWNSTREAM_SIGNING_SECRET=downstream_secret,
    )
    ingress = start("ingress", stack.env)
    worker = start("worker", stack.env, wait_ready=False)

    document = event()
    request_id = f"req-{uuid.uuid4().hex[:12]}"
    accepted = post(stack.url, document, signing_secret, request_id)
    assert accepted.status_code == 202
    assert accepted.headers["x-request-id"] == request_id
    refused_id = f"req-{uuid.uuid4().hex[:12]}"
    refused = post(stack.url, event(), f"{signing_secret}-but-wrong", refused_id)
    assert refused.status_code == 401
    assert stack.wait_terminal(1, timeout=20)
    assert wait_for(lambda: len(downstream.requests) == 1, timeout=5)
    assert worker.stop(timeout=10) == 0
    assert ingress.stop(timeout=10) == 0

    ingress_log, worker_log = ingress.logs(), worker.logs()
    intake_lines, worker_lines = json_lines(ingress_log), json_lines(worker_log)

    intake = the_line(intake_lines, msg="intake request", eventId=document["eventId"])
    assert intake["traceId"] == request_id
    assert SPAN_ID.match(intake["spanId"])
    assert intake["source"] == "courier"
    assert intake["status"] == 202
    assert intake["duplicate"] is False
    assert isinstance(intake["durationMs"], int | float) and intake["durationMs"] >= 0
    assert intake["level"] == "info" and intake["logger"] == "courier_gateway.intake"

    attempt = the_line(worker_lines, msg="job attempt", eventId=document["eventId"])
    assert attempt["traceId"] == request_id  # the same key in both processes' logs
    assert SPAN_ID.match(attempt["spanId"]) and attempt["spanId"] != intake["spanId"]
    assert attempt["source"] == "courier"
    assert attempt["outcome"] == "processed"
    assert attempt["attempt"] == 1
    assert isinstance(attempt["durationMs"], int | float) and attempt["durationMs"] >= 0

    bad = the_line(intake_lines, msg="intake request", traceId=refused_id)
    assert bad["status"] == 401
    assert bad["errorCode"] == "INVALID_SIGNATURE"
    assert bad["signatureFailure"] == "mismatch"
    assert bad["source"] == "courier"
    assert SPAN_ID.match(bad["spanId"]) and isinstance(bad["durationMs"], int | float)
    assert "eventId" not in bad  # an unverified body is not read

    assert any(line["msg"] == "ingress stopped" for line in intake_lines)
    assert any(line["msg"] == "worker stopped" for line in worker_lines)
    for secret in (signing_secret, downstream_secret):
        assert secret not in ingress_log
        assert secret not in worker_log


def config_error(role: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "courier_gateway", role],
        env={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_configuration_errors_about_secrets_never_echo_them(tmp_path: Path) -> None:
    short = "Zq7#xV"  # too short to be a secret, distinctive enough to search for
    short_key = "whsec_" + base64.b64encode(b"k3y-T00-5h0rt").decode()
    sources = tmp_path / "sources.yaml"
    sources.write_text(
        json.dumps(
            {
                "sources": {
                    "acme": {"scheme": "v1", "secrets": [{"id": "a1", "value": short}]},
                    "dhl": {
                        "scheme": "standard-webhooks",
                        "secrets": [{"id": "d1", "value": short_key}],
                    },
                }
            }
        )
    )
    typed = tmp_path / "typed.yaml"
    typed.write_text(json.dumps({"sources": {"acme": {"secrets": [{"id": "a1", "value": 7}]}}}))
    # Nothing listens here: every case must fail on its configuration before connecting.
    base = {"REDIS_URL": "redis://127.0.0.1:1/0", "MONGO_URI": "mongodb://127.0.0.1:1/"}
    cases = [
        ("ingress", {**base, "SIGNING_SECRET": short}, short, "SIGNING_SECRET"),
        ("ingress", {**base, "SIGNING_SECRET": f"  {short}  "}, short, "SIGNING_SECRET"),
        ("worker", {**base, "SIGNING_SECRET": short}, short, "SIGNING_SECRET"),
        (
            "worker",
            {**base, "DOWNSTREAM_URL": "http://127.0.0.1:9/u", "DOWNSTREAM_SIGNING_SECRET": short},
            short,
            "DOWNSTREAM_SIGNING_SECRET",
        ),
        ("ingress", {**base, "SOURCES_FILE": str(sources)}, short, "sources.acme.secrets.0.value"),
        ("ingress", {**base, "SOURCES_FILE": str(typed)}, "7)", "value"),
    ]
    with ThreadPoolExecutor(len(cases)) as pool:
        results = list(pool.map(lambda case: config_error(case[0], case[1]), cases))
    for (role, env, secret, named), result in zip(cases, results, strict=True):
        assert result.returncode == 2, (role, env, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("courier-gateway: configuration error: "), lines[0]
        assert named in lines[0], lines[0]
        assert secret not in result.stderr + result.stdout, lines[0]
    only_dhl = tmp_path / "dhl.yaml"
    only_dhl.write_text(
        json.dumps(
            {
                "sources": {
                    "dhl": {
                        "scheme": "standard-webhooks",
                        "secrets": [{"id": "d1", "value": short_key}],
                    }
                }
            }
        )
    )
    result = config_error("ingress", {**base, "SOURCES_FILE": str(only_dhl)})
    assert result.returncode == 2
    assert "sources.dhl.secrets.0.value" in result.stderr
    assert short_key not in result.stderr
    assert short_key.removeprefix("whsec_") not in result.stderr
