"""The served OpenAPI document matches the server: schemathesis against a real ingress.

For every operation of the document served at ``/openapi.json``, schemathesis generates requests
from the document, positive (valid per the document) and negative (violating it), sends them
over real HTTP and checks every answer against the document with its default checks: no 5xx,
only documented statuses, headers and bodies, valid data accepted and invalid data refused. The
event operation runs twice: unsigned, and with every body signed the way the source expects
(so schema-valid events reach the whole intake and are queued).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import ignored_auth

from courier_gateway.config.sources import Scheme
from courier_gateway.signatures import sign
from tests.conftest import base_env
from tests.support.servers import GatewayProcess, RedisServer, start_gateway

SECRET = "conformance-secret-0001"
EXAMPLES = 300  # per operation with inputs, signed and unsigned: half valid, half invalid


class V1Signature(requests.auth.AuthBase):
    """Signs the exact bytes requests will send, as the default source's couriers do."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        raw = body.encode() if isinstance(body, str) else bytes(body)  # type: ignore[arg-type]
        request.headers.update(sign(Scheme.V1, raw, SECRET.encode(), timestamp=int(time.time())))
        return request


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[tuple[GatewayProcess, Any]]:
    directory = tmp_path_factory.mktemp("conformance")
    env = base_env(redis_server.url, SIGNING_SECRET=SECRET)
    process = start_gateway("ingress", env, log_path=directory / "ingress.log")
    try:
        yield process, schemathesis.openapi.from_url(f"{process.url}/openapi.json")
    finally:
        process.stop(timeout=10)


def run_cases(
    strategy: st.SearchStrategy[Any], call: Callable[[Any], None], examples: int = EXAMPLES // 2
) -> int:
    """Run ``call`` on up to ``examples`` generated cases; return how many ran."""
    ran = 0

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def check(case: Any) -> None:
        nonlocal ran
        ran += 1
        call(case)

    check()
    return ran


def operations(schema: Any) -> list[Any]:
    return [result.ok() for result in schema.get_all_operations()]


def _has_inputs(operation: Any) -> bool:
    return bool(operation.definition.raw.get("parameters") or operation.body)


MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


def test_every_operation_answers_as_documented_unsigned(served: tuple[GatewayProcess, Any]) -> None:
    gateway, schema = served
    cases: dict[str, int] = {}
    with requests.Session() as session:
        for operation in operations(schema):
            for mode in MODES:
                if mode is GenerationMode.NEGATIVE and not _has_inputs(operation):
                    continue  # nothing to violate: no parameter and no body
                cases[operation.label] = cases.get(operation.label, 0) + run_cases(
                    operation.as_strategy(generation_mode=mode),
                    lambda case: case.call_and_validate(base_url=gateway.url, session=session),
                )
    # Operations without inputs have one possible request; the event operation gets the lot.
    assert cases["POST /v1/events/{source}"] >= EXAMPLES
    assert all(count >= 1 for count in cases.values())
    assert "Traceback" not in gateway.logs()


def test_signed_events_answer_as_documented(served: tuple[GatewayProcess, Any]) -> None:
    gateway, schema = served
    [submit] = [op for op in operations(schema) if op.label == "POST /v1/events/{source}"]
    statuses: dict[GenerationMode, set[int]] = {mode: set() for mode in MODES}
    ran = 0
    with requests.Session() as session:
        session.auth = V1Signature()
        for mode in MODES:

            def call(case: Any, mode: GenerationMode = mode) -> None:
                # ignored_auth re-sends a case with broken credentials; our signature is
                # computed per request from the body, so the session would sign that one too.
                # The unsigned run above shows missing or broken signatures are refused.
                response = case.call_and_validate(
                    base_url=gateway.url, session=session, excluded_checks=[ignored_auth]
                )
                statuses[mode].add(response.status_code)

            ran += run_cases(
                submit.as_strategy(
                    generation_mode=mode,
                    path_parameters={"source": "courier"},
                    # The signer replaces these; fixed so no case is "invalid" only in them.
                    headers={
                        "x-signature": "0" * 64,
                        "x-signature-timestamp": "0",
                        "x-signature-algorithm": "hmac-sha256",
                    },
                ),
                call,
            )
    assert ran >= EXAMPLES
    # Every schema-valid event reached the queue; every invalid one was refused with a 4xx.
    assert statuses[GenerationMode.POSITIVE] == {202}
    assert statuses[GenerationMode.NEGATIVE] and all(
        400 <= status < 500 for status in statuses[GenerationMode.NEGATIVE]
    ), statuses
    assert "Traceback" not in gateway.logs()
