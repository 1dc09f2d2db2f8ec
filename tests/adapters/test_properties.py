"""Property-based tests over adapter inputs: whatever a provider (or an attacker holding a valid
key) sends, mapping ends in exactly one of two ways — a complete result (every item mapped,
unmapped or ignored) or one PayloadError (a 400, nothing taken) — and never any other exception,
which the ingress would turn into a 5xx. Verification likewise only ever raises
VerificationError (a 401), whatever the headers."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from courier_gateway.adapters import (
    Inbound,
    Mapped,
    PayloadError,
    Secret,
    Unmapped,
    VerificationError,
    builtin_registry,
)
from courier_gateway.events import CourierEvent

REGISTRY = builtin_registry()
MAPPED = sorted(a.name for a in REGISTRY if not a.canonical)
ALL = sorted(REGISTRY.names())

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from(
        ["", " ", "delivered", "D", "2024-01-01T00:00:00Z", "20240423", "1.5e9", "$x", "a.b"]
    ),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.text(max_size=8) | st.sampled_from(["$set", "a.b", "id"]), children, max_size=4
        )
    ),
    max_leaves=20,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


def _replace(document: Any, path: tuple[Any, ...], new: Any, delete: bool) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(document, dict):
        copy = dict(document)
        if delete and not rest:
            copy.pop(head, None)
        else:
            copy[head] = _replace(copy[head], rest, new, delete)
        return copy
    copy_list = list(document)
    if delete and not rest:
        del copy_list[head]
    else:
        copy_list[head] = _replace(copy_list[head], rest, new, delete)
    return copy_list


@st.composite
def adapter_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    """A built-in adapter and a body: its sample with 1-4 random edits, or any JSON, or bytes."""
    name = draw(st.sampled_from(MAPPED))
    adapter = REGISTRY.get(name)
    assert adapter is not None and adapter.document.sample is not None
    kind = draw(st.sampled_from(["mutated", "mutated", "mutated", "any json", "bytes"]))
    if kind == "bytes":
        return name, draw(st.binary(max_size=200))
    if kind == "any json":
        return name, json.dumps(draw(json_values)).encode()
    document = json.loads(adapter.document.sample)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(_paths(document)))
        document = _replace(
            document, path, draw(json_values), delete=bool(path) and draw(st.booleans())
        )
    return name, json.dumps(document).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=adapter_bodies())
def test_mapping_is_complete_or_one_payload_error(case: tuple[str, bytes]) -> None:
    name, body = case
    adapter = REGISTRY.get(name)
    assert adapter is not None
    try:
        mapping = adapter.map_body(body, source="carrier", default_source="courier")
    except PayloadError as error:
        message = str(error)
        assert message, "a refusal names what is wrong"
        return
    for result in mapping.results:
        if isinstance(result, Mapped):
            # The canonical contract, as a posted event would meet it at intake.
            CourierEvent.model_validate_json(json.dumps(result.event))
        elif isinstance(result, Unmapped):
            assert result.check in {"status", "occurredAt"}
            assert json.loads(result.original)
            assert result.event["idempotencyKey"].startswith("carrier:")
            json.dumps(result.event)


header_values = st.one_of(
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=80),
    st.sampled_from(
        ["Bearer ", "Basic !!", "t=,v1=", "t=1,v1=zz", "hmac-sha256-hex=", "v1,", "Basic Og=="]
    ),
)


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=30, deadline=None)
@given(
    headers=st.dictionaries(
        st.sampled_from(
            [
                "aftership-hmac-sha256",
                "am-webhook-signature",
                "x-hmac-signature",
                "authorization",
                "shippo-auth-signature",
                "fdx-signature",
                "credential",
                "sign",
                "x-courier-gateway-token",
                "x-signature",
                "x-signature-timestamp",
                "x-signature-algorithm",
                "webhook-id",
                "webhook-timestamp",
                "webhook-signature",
                "as-signature-hmac-sha256",
            ]
        ),
        st.lists(header_values, min_size=1, max_size=2),
        max_size=5,
    ),
    query=st.dictionaries(
        st.sampled_from(["token", "x"]), st.lists(header_values, min_size=1, max_size=2)
    ),
    body=st.binary(max_size=64),
)
def test_verification_only_ever_refuses_with_a_reason(
    name: str, headers: dict[str, list[str]], query: dict[str, list[str]], body: bytes
) -> None:
    adapter = REGISTRY.get(name)
    assert adapter is not None
    request = Inbound(
        body, lambda n: headers.get(n, []), lambda n: query.get(n, []), client="10.0.0.1"
    )
    secret = (
        "whsec_ZGhsLXRlc3Qta2V5LTMyLWJ5dGVzLWxvbmctMDAwMDA="
        if name == "standard-webhooks"
        else "k" * 16
    )
    try:
        adapter.verify(request, [Secret("k1", secret)], now=time.time(), tolerance=300)
    except VerificationError as error:
        reason, message = error.reason, str(error)
        assert reason, message
        assert message, reason


def test_nesting_too_deep_to_keep_is_a_payload_error() -> None:
    deep: Any = "x"
    for _ in range(300):
        deep = {"d": deep}
    ups = REGISTRY.get("ups")
    assert ups is not None and ups.document.sample is not None
    sample = json.loads(ups.document.sample)
    # In a field the derived key digests, and in an unmapped item's original.
    for field, value in [("gmtActivityDate", deep), ("receivedBy", deep)]:
        body = dict(sample, **{field: value})
        if field == "receivedBy":
            body["activityStatus"] = {"type": "Q", "code": "1"}
        with pytest.raises(PayloadError, match=r"nested too deeply|nested deeper"):
            ups.map_body(json.dumps(body).encode(), source="carrier", default_source="courier")
