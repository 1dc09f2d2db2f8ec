"""Verification: every built-in adapter accepts a request signed the provider's way and refuses a
tampered body, a wrong key, a missing credential and a stale timestamp (where the provider signs
one), naming the failing check; the canonical schemes behave exactly as ``signatures.py``.

The provider signing comes from :mod:`courier_gateway.adapters.signing`, checked independently
here against hand-computed signatures (the providers' documented constructions).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import unicodedata
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from courier_gateway.adapters import Inbound, Secret, VerificationError, builtin_registry
from courier_gateway.adapters.signing import SignedRequest, alternatives, sign_request
from courier_gateway.adapters.verification import Inbound as InboundType
from courier_gateway.config import Key
from courier_gateway.config.sources import Scheme, decode_secret
from courier_gateway.signatures import SignatureError, sign, verify

REGISTRY = builtin_registry()
NOW = 1_800_000_000
SECRET = "a-provider-secret-2024"
WHSEC = "whsec_" + base64.b64encode(b"dhl-test-key-32-bytes-long-00000").decode()
OTHER = "another-secret-entirely"
# Adapters whose provider signs a timestamp, and how to make one stale.
TIMESTAMPED = {"v1", "legacy-body", "standard-webhooks", "shippo"}
# Static-token providers do not sign the body: a changed body cannot be detected there.
BODY_SIGNED = {
    "v1",
    "legacy-body",
    "standard-webhooks",
    "aftership",
    "easypost",
    "shippo",
    "fedex",
    "17track",
}


def secret_for(name: str) -> str:
    return WHSEC if name == "standard-webhooks" else SECRET


def body_for(name: str) -> bytes:
    adapter = REGISTRY.get(name)
    assert adapter is not None
    sample = adapter.document.sample
    if sample is not None:
        return sample.encode()
    return (
        b'{"eventId":"evt_1","eventType":"shipment.status.updated",'
        b'"occurredAt":"2026-01-01T00:00:00Z","payload":{"shipmentId":"s1","status":"in_transit"}}'
    )


def ways() -> list[tuple[str, int]]:
    return [(a.name, i) for a in REGISTRY for i in range(alternatives(a))]


def check(name: str, request: InboundType, secret: str = "", *, now: int = NOW) -> str | None:
    adapter = REGISTRY.get(name)
    assert adapter is not None
    keys = [Secret("old", OTHER + "-old"), Secret("k1", secret or secret_for(name))]
    return adapter.verify(request, keys, now=now, tolerance=300)


def refused(
    name: str, request: InboundType, *, now: int = NOW, secret: str = ""
) -> VerificationError:
    with pytest.raises(VerificationError) as caught:
        check(name, request, secret, now=now)
    return caught.value


def signed(
    name: str, alternative: int, body: bytes, *, now: int = NOW, secret: str = ""
) -> SignedRequest:
    adapter = REGISTRY.get(name)
    assert adapter is not None
    return sign_request(adapter, body, secret or secret_for(name), now=now, alternative=alternative)


@pytest.mark.parametrize(("name", "alternative"), ways())
def test_a_request_signed_the_providers_way_is_accepted(name: str, alternative: int) -> None:
    body = body_for(name)
    assert check(name, signed(name, alternative, body).inbound(body)) == "k1"


@pytest.mark.parametrize(("name", "alternative"), ways())
def test_a_wrong_key_is_refused_naming_the_check(name: str, alternative: int) -> None:
    body = body_for(name)
    secret = (
        OTHER if name != "standard-webhooks" else "whsec_" + base64.b64encode(b"o" * 32).decode()
    )
    error = refused(name, signed(name, alternative, body, secret=secret).inbound(body))
    assert error.reason == "mismatch"
    assert "does not match" in str(error)


# EasyPost's Basic credentials and Shippo's URL token (their second ways) do not cover the body.
SIGNED_WAYS = [
    w for w in ways() if w[0] in BODY_SIGNED and w not in {("easypost", 1), ("shippo", 1)}
]


@pytest.mark.parametrize(("name", "alternative"), SIGNED_WAYS)
def test_a_tampered_body_is_refused(name: str, alternative: int) -> None:
    body = body_for(name)
    request = signed(name, alternative, body)
    tampered = body.replace(b"1", b"2", 1)
    assert tampered != body
    error = refused(name, request.inbound(tampered))
    assert error.reason == "mismatch", error
    assert "body" in str(error)


@pytest.mark.parametrize("name", sorted(a.name for a in REGISTRY))
def test_a_missing_credential_is_refused_naming_what_is_missing(name: str) -> None:
    body = body_for(name)
    bare = SignedRequest(headers={"content-type": "application/json"})
    error = refused(name, bare.inbound(body))
    assert error.reason == "missing_header"
    assert "missing" in str(error)


@pytest.mark.parametrize("name", sorted(TIMESTAMPED))
@pytest.mark.parametrize(
    ("offset", "reason"), [(-301, "stale_timestamp"), (301, "future_timestamp")]
)
def test_a_timestamp_outside_the_tolerance_is_refused(name: str, offset: int, reason: str) -> None:
    body = body_for(name)
    request = signed(name, 0, body, now=NOW + offset)
    error = refused(name, request.inbound(body))
    assert error.reason == reason
    assert "the tolerance is 300 s" in str(error)


def headers_of(values: dict[str, str]) -> Callable[[str], list[str]]:
    lowered = {k.lower(): v for k, v in values.items()}
    return lambda name: [lowered[name]] if name in lowered else []


# Full-width letters and a ligature: NFKD turns them into "secret-key-fi" (EasyPost's rule).
FULLWIDTH = "\uff53\uff45\uff43\uff52\uff45\uff54-\uff4b\uff45\uff59-\ufb01"


def test_provider_constructions_match_their_documentation() -> None:
    """Hand-computed signatures, as each provider documents them, pass the built-ins."""
    body = b'{"event":"tracking_update"}'
    key = SECRET.encode()
    aftership = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()
    assert (
        check("aftership", Inbound(body, headers_of({"aftership-hmac-sha256": aftership}))) == "k1"
    )
    legacy = {"am-webhook-signature": "hmac-sha256=" + aftership}
    assert check("aftership", Inbound(body, headers_of(legacy))) == "k1"
    nfkd = unicodedata.normalize("NFKD", FULLWIDTH).encode()
    easypost = "hmac-sha256-hex=" + hmac.new(nfkd, body, hashlib.sha256).hexdigest()
    got = check(
        "easypost",
        Inbound(body, headers_of({"x-hmac-signature": easypost})),
        FULLWIDTH,
    )
    assert got == "k1"
    shippo = hmac.new(key, f"{NOW}.".encode() + body, hashlib.sha256).hexdigest()
    header = {"shippo-auth-signature": f"t={NOW},v1={shippo}"}
    assert check("shippo", Inbound(body, headers_of(header))) == "k1"
    token = Inbound(body, headers_of({}), lambda name: [SECRET] if name == "token" else [])
    assert check("shippo", token) == "k1"
    fedex = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()
    assert check("fedex", Inbound(body, headers_of({"fdx-signature": fedex}))) == "k1"
    track17 = hashlib.sha256(body + b"/" + key).hexdigest()
    assert check("17track", Inbound(body, headers_of({"sign": track17}))) == "k1"
    assert check("ship24", Inbound(body, headers_of({"authorization": f"Bearer {SECRET}"}))) == "k1"
    assert check("ups", Inbound(body, headers_of({"credential": SECRET}))) == "k1"
    assert check("dhl", Inbound(body, headers_of({"x-courier-gateway-token": SECRET}))) == "k1"
    basic = "Basic " + base64.b64encode(SECRET.encode()).decode()
    assert check("easypost", Inbound(body, headers_of({"authorization": basic}))) == "k1"


def test_rotation_any_active_key_verifies_and_its_id_is_returned() -> None:
    body = body_for("fedex")
    request = signed("fedex", 0, body, secret=OTHER + "-old").inbound(body)
    assert check("fedex", request) == "old"


def test_a_failed_alternative_with_its_credential_present_is_the_one_reported() -> None:
    body = body_for("shippo")
    bad = {"shippo-auth-signature": f"t={NOW},v1={'0' * 64}"}
    error = refused("shippo", Inbound(body, headers_of(bad)))
    assert error.reason == "mismatch"
    assert "shippo-auth-signature" in str(error)
    error = refused("shippo", Inbound(body, headers_of({})))
    assert "missing header shippo-auth-signature, or missing query parameter token" in str(error)


def test_a_repeated_credential_header_is_refused() -> None:
    body = body_for("ship24")
    twice = Inbound(body, lambda name: [f"Bearer {SECRET}"] * 2 if name == "authorization" else [])
    assert refused("ship24", twice).reason == "duplicate_header"


# --- the canonical schemes: the same outcome as signatures.py, on generated requests ---------

SCHEME_SECRETS = {Scheme.V1: SECRET, Scheme.LEGACY_BODY: SECRET, Scheme.STANDARD_WEBHOOKS: WHSEC}


def reference(scheme: Scheme, headers: dict[str, str], body: bytes, now: int) -> str:
    keys = [Key("k1", decode_secret(scheme, SCHEME_SECRETS[scheme]))]
    try:
        return verify(scheme, keys, headers_of(headers), body, now=now, tolerance_seconds=300)
    except SignatureError:
        return "refused"


def engine(scheme: Scheme, headers: dict[str, str], body: bytes, now: int) -> str:
    adapter = REGISTRY.get(scheme.value)
    assert adapter is not None
    secret = SCHEME_SECRETS[scheme]
    try:
        key = adapter.verify(
            Inbound(body, headers_of(headers)), [Secret("k1", secret)], now=now, tolerance=300
        )
        return str(key)
    except VerificationError:
        # With several defects at once, which one is named first may differ; a single defect
        # gets the same reason and message (the test below).
        return "refused"


def _mutations(scheme: Scheme) -> st.SearchStrategy[dict[str, object]]:
    names = (
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
        if scheme is Scheme.STANDARD_WEBHOOKS
        else ["x-signature", "x-signature-timestamp", "x-signature-algorithm"]
    )
    return st.fixed_dictionaries(
        {
            "drop": st.lists(st.sampled_from(names), max_size=2, unique=True),
            "replace": st.dictionaries(
                st.sampled_from(names),
                st.one_of(
                    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=90),
                    st.sampled_from(["hmac-sha512", "HMAC-SHA256", "", "v1,", "v2,abc", "0" * 64]),
                ),
                max_size=2,
            ),
            "skew": st.sampled_from([0, -299, 299, -301, 301, -(10**6)]),
            "body": st.sampled_from([None, b"{}", b'{"x":1}']),
            "algorithm": st.sampled_from(["hmac-sha256", "hmac-sha512"]),
            "signer": st.sampled_from(list(Scheme)),
        }
    )


@pytest.mark.parametrize("scheme", list(Scheme))
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_canonical_adapters_decide_exactly_as_signatures_py(
    scheme: Scheme, data: st.DataObject
) -> None:
    mutation = data.draw(_mutations(scheme))
    body = b'{"eventId":"e1"}'
    signer: Scheme = mutation["signer"]  # type: ignore[assignment]
    secret = (
        decode_secret(signer, SCHEME_SECRETS[signer])
        if signer is scheme
        else decode_secret(scheme, SCHEME_SECRETS[scheme])
    )
    headers = sign(
        signer,
        body,
        secret,
        timestamp=NOW + int(mutation["skew"]),  # type: ignore[call-overload]
        webhook_id="msg_1",
        algorithm=str(mutation["algorithm"])
        if signer is not Scheme.STANDARD_WEBHOOKS
        else "hmac-sha256",
    )
    for name in mutation["drop"]:  # type: ignore[attr-defined]
        headers.pop(name, None)
    headers.update(mutation["replace"])  # type: ignore[arg-type]
    sent = mutation["body"] or body
    assert engine(scheme, headers, sent, NOW) == reference(scheme, headers, sent, NOW)  # type: ignore[arg-type]


def _single_defects(scheme: Scheme) -> list[dict[str, str]]:
    body = b'{"eventId":"e1"}'
    key = decode_secret(scheme, SCHEME_SECRETS[scheme])
    good = sign(scheme, body, key, timestamp=NOW, webhook_id="msg_1")
    if scheme is Scheme.STANDARD_WEBHOOKS:
        return [
            {k: v for k, v in good.items() if k != "webhook-id"},
            {k: v for k, v in good.items() if k != "webhook-signature"},
            {**good, "webhook-id": "two words"},
            {**good, "webhook-timestamp": "soon"},
            {**good, "webhook-timestamp": str(NOW + 400)},
            {**good, "webhook-signature": "v2,abc"},
        ]
    return [
        {k: v for k, v in good.items() if k != "x-signature"},
        {k: v for k, v in good.items() if k != "x-signature-timestamp"},
        {**good, "x-signature-algorithm": "md5"},
        {**good, "x-signature-timestamp": "soon"},
        {**good, "x-signature-timestamp": str(NOW - 400)},
        {**good, "x-signature": "zz"},
        {**good, "x-signature": "0" * 64},
        sign(Scheme.LEGACY_BODY if scheme is Scheme.V1 else Scheme.V1, body, key, timestamp=NOW),
    ]


@pytest.mark.parametrize("scheme", list(Scheme))
def test_canonical_single_defects_get_the_reason_and_message_of_signatures_py(
    scheme: Scheme,
) -> None:
    """The same reason and message from both implementations, except that the mismatch message
    of standard-webhooks now names the webhook-id and the source like the others."""
    body = b'{"eventId":"e1"}'
    key = decode_secret(scheme, SCHEME_SECRETS[scheme])
    adapter = REGISTRY.get(scheme.value)
    assert adapter is not None
    for headers in _single_defects(scheme):
        with pytest.raises(SignatureError) as old:
            verify(
                scheme, [Key("k1", key)], headers_of(headers), body, now=NOW, tolerance_seconds=300
            )
        secrets = [Secret("k1", SCHEME_SECRETS[scheme])]
        with pytest.raises(VerificationError) as new:
            adapter.verify(Inbound(body, headers_of(headers)), secrets, now=NOW, tolerance=300)
        assert new.value.reason == old.value.reason, headers
        if old.value.reason != "mismatch" or scheme is not Scheme.STANDARD_WEBHOOKS:
            assert str(new.value) == str(old.value)


def test_source_ip_check_and_the_trusted_proxy_header() -> None:
    from courier_gateway.adapters.model import SourceIpCheck
    from courier_gateway.adapters.verification import client_address, compile_checks

    check_ip = compile_checks(
        [SourceIpCheck(type="source-ip", cidrs=["34.70.0.0/16", "2001:db8::/32"])]
    )

    def verdict(client: str | None) -> str:
        try:
            check_ip.verify(Inbound(b"", headers_of({}), client=client), [], now=NOW, tolerance=300)
        except VerificationError as error:
            return error.reason
        return "allowed"

    assert verdict("34.70.29.163") == "allowed"
    assert verdict("::ffff:34.70.29.163") == "allowed"
    assert verdict("2001:db8::1") == "allowed"
    assert verdict("10.0.0.1") == "ip_not_allowed"
    assert verdict(None) == "ip_not_allowed"
    forwarded = headers_of({"x-forwarded-for": "34.70.1.1, 10.9.8.7"})
    # Only the configured header, and only the entry our proxy appended (the last), is believed.
    assert client_address("10.0.0.2", forwarded, None) == "10.0.0.2"
    assert client_address("10.0.0.2", forwarded, "X-Forwarded-For") == "10.9.8.7"
    spoofed = headers_of({"x-forwarded-for": "34.70.1.1"})
    assert client_address("10.0.0.2", spoofed, "X-Real-IP") == "10.0.0.2"
