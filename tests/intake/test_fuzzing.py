"""Property-based fuzzing of the intake, over real HTTP against the real ingress process.

Hypothesis generates over a thousand requests, each one invalid in at least one way the generator
knows of. The inputs include broken UTF-8 and arbitrary bytes, JSON nested 30 to 2000 levels deep
(at the top level and inside ``payload``), numbers no store can keep (integers beyond 64 bits,
``1e400``, ``-1e400``, ``NaN``), a wrong type or an out-of-pattern value for every field, missing
fields, bodies signed correctly but structurally invalid, valid bodies with a wrong signature,
missing and duplicated signature headers, malformed, stale and future timestamps and wrong
content types. Every configured source of ``support/sources.py`` (every scheme) is fuzzed.

For every request the properties are the intake's contract for a refusal: a 4xx (never a 5xx,
never a 2xx), the error shape (``acknowledged: false`` and an ``errorCode``), and nothing added to
the Redis stream. Where the generator knows which check fails first, the exact status is asserted
too: the ingress checks the body size (413), then the source (404), the content type (415), the
signature (401) and the event's structure (400). ``fedex`` is rate limited, so a 429 is also an
acceptable refusal there.

Examples are derandomized, so every run (and CI) sends the same inputs; ``pytest
--hypothesis-show-statistics`` shows how often each kind of defect was generated. Two classes of
invalid input this fuzzer found accepted (digit-string ``occurredAt``, unstorable field names
directly in ``payload``) are refused now and pinned by the tests at the end of this file.
"""

from __future__ import annotations

import base64
import json
import re
import string
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import hypothesis
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from courier_gateway.config.sources import Scheme, decode_secret
from courier_gateway.signatures import ALGORITHMS, sign
from tests.support.servers import GatewayProcess, RedisServer
from tests.support.signing import event
from tests.support.sources import COURIER_SECRET, DHL_SECRET, LEGACY_SECRET, LIMITED_SECRET

MAX_BODY_BYTES = 4096  # the shared ingress runs with MAX_BODY_BYTES=4096 (see conftest.py)
FRESHNESS_MARGIN = 360  # beyond the default 300 s signature tolerance, with room for clock drift

FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Headers = list[tuple[str, str | bytes]]
Draw = Callable[[st.SearchStrategy[Any]], Any]


@dataclass(frozen=True)
class Source:
    """A source the shared ingress is configured with (``support/sources.py``)."""

    name: str
    scheme: Scheme
    secret: str

    @property
    def key(self) -> bytes:
        return decode_secret(self.scheme, self.secret)

    @property
    def required_headers(self) -> tuple[str, ...]:
        """The signature headers a request must carry (``x-signature-algorithm`` is optional)."""
        if self.scheme is Scheme.STANDARD_WEBHOOKS:
            return ("webhook-id", "webhook-timestamp", "webhook-signature")
        return ("x-signature", "x-signature-timestamp")


SOURCES = (
    Source("courier", Scheme.V1, COURIER_SECRET),
    Source("dhl", Scheme.STANDARD_WEBHOOKS, DHL_SECRET),
    Source("legacy", Scheme.LEGACY_BODY, LEGACY_SECRET),
    Source("fedex", Scheme.V1, LIMITED_SECRET),
)
SOURCE_NAMES = frozenset(source.name for source in SOURCES)
DEFAULT_SOURCE = "courier"  # its path carries events of any source
RATE_LIMITED = frozenset({"fedex"})

ERROR_CODES = {
    400: {"INVALID_PAYLOAD", "INVALID_REQUEST"},
    401: {"INVALID_SIGNATURE"},
    404: {"UNKNOWN_SOURCE", "NOT_FOUND"},
    405: {"METHOD_NOT_ALLOWED"},
    408: {"REQUEST_TIMEOUT"},
    413: {"PAYLOAD_TOO_LARGE"},
    415: {"UNSUPPORTED_MEDIA_TYPE"},
    429: {"RATE_LIMITED"},
}


@dataclass
class Attempt:
    """One generated request, what is wrong with it, and the status of the first failing check."""

    path: str  # the URL's source segment, percent-encoded
    body: bytes
    headers: Headers
    defects: list[str]
    expected: int | None  # None: any refusal (4xx) will do
    method: str = "POST"
    chunked: bool = False


# --- the ingress, a client and the stream --------------------------------------------------------


@pytest.fixture(scope="module")
def client(ingress: GatewayProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=ingress.url, timeout=10) as http:
        yield http


@pytest.fixture(scope="module")
def stream_length(
    ingress: GatewayProcess, redis_server: RedisServer
) -> Iterator[Callable[[], int]]:
    connection = redis_server.client()
    yield lambda: int(connection.xlen(ingress.stream))
    connection.close()


def assert_refused(
    client: httpx.Client, stream_length: Callable[[], int], attempt: Attempt
) -> None:
    """Send ``attempt`` and check the refusal contract; the stream must not grow."""
    before = stream_length()
    response = client.request(
        attempt.method,
        f"/v1/events/{attempt.path}",
        content=iter([attempt.body]) if attempt.chunked else attempt.body,
        headers=attempt.headers,
    )
    after = stream_length()
    seen = f"{attempt.defects} -> {response.status_code} {response.text[:400]}"
    assert after == before, f"enqueued {after - before} event(s): {seen}"
    assert 400 <= response.status_code < 500, seen
    if attempt.expected is not None:
        allowed = {413} if len(attempt.body) > MAX_BODY_BYTES else {attempt.expected}
        if attempt.path in RATE_LIMITED:
            allowed.add(429)
        assert response.status_code in allowed, f"expected {sorted(allowed)}: {seen}"
    try:
        document = response.json()
    except ValueError:
        pytest.fail(f"the refusal is not JSON: {seen}")
    assert document.get("acknowledged") is False, seen
    code = document.get("errorCode")
    assert isinstance(code, str), seen
    assert code in ERROR_CODES.get(response.status_code, {code}), seen


def fuzz(client: httpx.Client, stream_length: Callable[[], int], attempt: Attempt) -> None:
    """:func:`assert_refused`, tallying the kinds of defect for ``--hypothesis-show-statistics``."""
    for defect in attempt.defects:
        hypothesis.event(defect)
    if len(attempt.body) > MAX_BODY_BYTES:
        hypothesis.event("body over MAX_BODY_BYTES")
    assert_refused(client, stream_length, attempt)


# --- building bodies and signatures ------------------------------------------------------------


class Raw(str):
    """A JSON fragment written out as is: tokens no encoder produces (``1e400``, ``NaN``) and
    nesting deeper than :mod:`json` would recurse."""

    __slots__ = ()


def to_json(value: Any, *, ascii_only: bool = True) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, dict):
        items = (
            f"{json.dumps(key, ensure_ascii=ascii_only)}:{to_json(item, ascii_only=ascii_only)}"
            for key, item in value.items()
        )
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(item, ascii_only=ascii_only) for item in value) + "]"
    return json.dumps(value, ensure_ascii=ascii_only)


def nest(depth: int, shape: str, leaf: str) -> Raw:
    """``depth`` levels of arrays, objects or both around ``leaf``."""
    opens = [
        "[" if shape == "list" or (shape == "mixed" and level % 2) else '{"a":'
        for level in range(depth)
    ]
    closes = ["]" if bracket == "[" else "}" for bracket in reversed(opens)]
    return Raw("".join(opens) + leaf + "".join(closes))


def valid_body(source: Source | None = None) -> bytes:
    document = event(source=source.name) if source is not None else event()
    return to_json(document).encode()


def signature(
    source: Source,
    body: bytes,
    *,
    timestamp: int | None = None,
    webhook_id: str | None = None,
    algorithm: str = "hmac-sha256",
    key: bytes | None = None,
    scheme: Scheme | None = None,
) -> Headers:
    """The headers that sign ``body`` for ``source``, optionally with another key or scheme."""
    headers = sign(
        scheme or source.scheme,
        body,
        key or source.key,
        timestamp=int(time.time()) if timestamp is None else timestamp,
        webhook_id=webhook_id or f"msg_{uuid.uuid4().hex}",
        algorithm=algorithm,
    )
    return [("content-type", "application/json"), *headers.items()]


def without(headers: Headers, name: str) -> Headers:
    return [(key, value) for key, value in headers if key.lower() != name]


def replaced(headers: Headers, name: str, value: str | bytes) -> Headers:
    return [*without(headers, name), (name, value)]


def value_of(headers: Headers, name: str) -> str:
    value = next(value for key, value in headers if key.lower() == name)
    assert isinstance(value, str)
    return value


def splice(text: str, insert: str, at: int) -> str:
    at %= len(text) + 1
    return text[:at] + insert + text[at:]


def splice_bytes(raw: bytes, insert: bytes, at: int) -> bytes:
    at %= len(raw) + 1
    return raw[:at] + insert + raw[at:]


# --- strategies: values ------------------------------------------------------------------------

UTF8 = st.characters(codec="utf-8")
ID_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
NOT_ID_CHARS = st.characters(codec="utf-8", exclude_characters=[chr(c) for c in range(0x21, 0x7F)])
NAME_CHARS = string.ascii_lowercase + string.digits + "_.-"
SOURCE_CHARS = string.ascii_lowercase + string.digits + "_-"

# Byte sequences that occur in no valid UTF-8 text, whatever surrounds them.
NEVER_UTF8 = (
    b"\xff",
    b"\xfe",
    b"\xc0\xaf",  # overlong '/'
    b"\xc1\xbf",
    b"\xe0\x80\xaf",  # overlong, three bytes
    b"\xed\xa0\x80",  # a UTF-16 surrogate
    b"\xed\xbf\xbf",
    b"\xf0\x80\x80\xaf",  # overlong, four bytes
    b"\xf4\x90\x80\x80",  # beyond U+10FFFF
    b"\xf5\x80\x80\x80",
    b"\xf8\x88\x80\x80\x80",  # five-byte form
)
# Also invalid between ASCII bytes: lone continuation bytes and truncated sequences.
BROKEN_UTF8 = (*NEVER_UTF8, b"\x80", b"\xbf", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98")

# Numbers no event may carry: anything outside the 64-bit integer range, whether spelt as an
# integer or a float, overflowing floats and NaN-like tokens
# (some of which are not JSON at all); all are refused wherever they appear.
huge_integers = st.one_of(
    st.integers(min_value=2**63),
    st.integers(max_value=-(2**63) - 1),
    st.integers(64, 3000).map(lambda bits: 2**bits),
).map(lambda number: Raw(str(number)))
overflowing_floats = st.builds(
    lambda sign_, mantissa, fraction, marker, exponent: Raw(
        f"{sign_}{mantissa}{fraction}{marker}{exponent}"
    ),
    st.sampled_from(["", "-"]),
    st.integers(1, 99999),
    st.sampled_from(["", ".0", ".5", ".999"]),
    st.sampled_from(["e", "E", "e+", "E+"]),
    st.integers(309, 100_000),
)
nan_like = st.sampled_from(
    [
        "NaN",
        "-NaN",
        "Infinity",
        "-Infinity",
        "+Infinity",
        "nan",
        "inf",
        "-inf",
        "Inf",
        "1e400",
        "-1e400",
    ]
).map(Raw)
# Floats beyond the 64-bit integer range: JSON cannot tell them from huge integers.
huge_floats = st.floats(min_value=1e19, allow_infinity=False).map(
    lambda number: Raw(repr(number) if "e" in repr(number) else f"{number:.1f}")
) | st.floats(max_value=-1e19, allow_infinity=False).map(lambda number: Raw(repr(number)))
unstorable_numbers = st.one_of(huge_integers, overflowing_floats, nan_like, huge_floats)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(min_value=-9.2e18, max_value=9.2e18),
    st.text(UTF8, max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(UTF8, max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)
deep_values = st.builds(
    nest,
    st.integers(30, 2000),
    st.sampled_from(["list", "object", "mixed"]),
    st.sampled_from(["0", "null", '"x"', "true", "[]", "{}", "-1.5"]),
)
any_json = st.one_of(json_values, unstorable_numbers, deep_values)


def _is_string(value: Any) -> bool:
    return isinstance(value, str) and not isinstance(value, Raw)


def _is_object(value: Any) -> bool:
    return isinstance(value, dict) or (isinstance(value, Raw) and value.startswith("{"))


def not_a_string(*, nullable: bool) -> st.SearchStrategy[Any]:
    return any_json.filter(
        lambda value: not _is_string(value) and (value is not None or not nullable)
    )


not_an_object = any_json.filter(lambda value: not _is_object(value))


def bad_identifiers(max_size: int) -> st.SearchStrategy[str]:
    """Not printable ASCII without spaces, or empty, or longer than ``max_size``."""
    return st.one_of(
        st.just(""),
        st.text(ID_CHARS, min_size=max_size + 1, max_size=max_size + 40),
        st.builds(splice, st.text(ID_CHARS, min_size=1, max_size=20), NOT_ID_CHARS, st.integers()),
    )


def bad_names(max_size: int, chars: str = NAME_CHARS) -> st.SearchStrategy[str]:
    """Not ``^[a-z][<chars>]*$`` (or the source's ``^[a-z0-9]...``), or too long."""
    first_chars = string.ascii_lowercase + (string.digits if chars == SOURCE_CHARS else "")
    good_rest = st.text(st.sampled_from(chars), max_size=20)
    return st.one_of(
        st.just(""),
        st.builds(
            str.__add__, st.characters(codec="utf-8", exclude_characters=first_chars), good_rest
        ),
        st.builds(
            lambda first, rest, bad, at: first + splice(rest, bad, at),
            st.sampled_from(first_chars),
            good_rest,
            st.characters(codec="utf-8", exclude_characters=chars),
            st.integers(),
        ),
        st.builds(
            str.__add__,
            st.sampled_from(first_chars),
            st.text(st.sampled_from(chars), min_size=max_size, max_size=max_size + 40),
        ),
    )


# occurredAt must be RFC 3339 with a zone. Numeric strings are left out on purpose: the gateway
# accepts them today (see test_numeric_occurred_at_is_refused), and so is any text with a digit.
bad_occurred_at = st.one_of(
    st.datetimes().map(lambda moment: moment.isoformat()),  # no zone
    st.sampled_from(
        [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-02-30T00:00:00Z",
            "2026-01-01T24:00:00Z",
            "2026-01-01",
            "2026-01-01T00:00:00+25:00",
            "20260101T000000Z",
            "2026-01-01T00:00:00Z ",
            " 2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00+00",
            "2026-001T00:00:00Z",
            "1e9",
        ]
    ),
    st.text(st.characters(codec="utf-8", exclude_characters=string.digits), max_size=30),
)

bad_keys = st.one_of(  # refused in nested objects under payload
    st.text(UTF8, max_size=8).map(lambda text: "$" + text),
    st.builds(
        lambda left, right: f"{left}.{right}", st.text(UTF8, max_size=5), st.text(UTF8, max_size=5)
    ),
    st.builds(
        lambda left, right: f"{left}\x00{right}",
        st.text(UTF8, max_size=5),
        st.text(UTF8, max_size=5),
    ),
)
extra_names = st.text(st.sampled_from(string.ascii_letters), min_size=1, max_size=10).filter(
    lambda name: name not in {"shipmentId", "status", "orderId"}
)

header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60).map(
    str.strip
)
header_bytes = st.binary(min_size=1, max_size=40).map(  # visible ASCII and obs-text only
    lambda raw: bytes(byte for byte in raw if byte > 0x20 and byte != 0x7F) or b"\x80"
)
non_ascii_header_bytes = st.builds(
    lambda raw, high: raw + bytes([high]), header_bytes, st.integers(0x80, 0xFF)
)
header_values = st.one_of(header_text, header_bytes)
harmless_headers = st.lists(  # ignored when malformed, so never the defect
    st.tuples(
        st.sampled_from(["x-request-id", "traceparent", "user-agent", "accept", "x-forwarded-for"]),
        header_values,
    ),
    max_size=3,
)

# --- strategies: structurally invalid documents ------------------------------------------------

TOP_LEVEL = ("eventId", "eventType", "occurredAt", "source", "idempotencyKey", "payload")
REQUIRED = ["eventId", "eventType", "occurredAt", "payload", "payload.shipmentId", "payload.status"]
NULLABLE = {"source", "idempotencyKey", "payload.orderId"}
BAD_VALUES: dict[str, st.SearchStrategy[str]] = {  # right type, wrong content, per string field
    "eventId": bad_identifiers(128),
    "eventType": bad_names(128),
    "occurredAt": bad_occurred_at,
    "source": bad_names(63, SOURCE_CHARS),
    "idempotencyKey": bad_identifiers(256),
    "payload.shipmentId": bad_identifiers(128),
    "payload.status": bad_names(64),
    "payload.orderId": bad_identifiers(128),
}


def _container(document: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The object holding ``path``'s field; None when an earlier defect replaced ``payload``."""
    if "." not in path:
        return document
    payload = document.get("payload")
    return payload if isinstance(payload, dict) else None


def _set(document: dict[str, Any], path: str, value: Any) -> None:
    container = _container(document, path)
    if container is not None:
        container[path.rpartition(".")[2]] = value


def _wrap(draw: Draw, value: Any) -> Any:
    """``value`` inside 0-4 arrays or objects, well within the storable depth."""
    for _ in range(draw(st.integers(0, 4))):
        value = [value] if draw(st.booleans()) else {"a": value}
    return value


def _wrong_type(draw: Draw, document: dict[str, Any], source: Source) -> str:
    path = draw(st.sampled_from([*BAD_VALUES, "payload"]))
    value = not_an_object if path == "payload" else not_a_string(nullable=path in NULLABLE)
    _set(document, path, draw(value))
    return f"wrong type: {path}"


def _bad_value(draw: Draw, document: dict[str, Any], source: Source) -> str:
    path = draw(st.sampled_from(list(BAD_VALUES)))
    _set(document, path, draw(BAD_VALUES[path]))
    return f"bad value: {path}"


def _missing(draw: Draw, document: dict[str, Any], source: Source) -> str:
    path = draw(st.sampled_from(REQUIRED))
    container = _container(document, path)
    if container is not None:
        container.pop(path.rpartition(".")[2], None)
    return f"missing: {path}"


def _unstorable_number(draw: Draw, document: dict[str, Any], source: Source) -> str:
    _set(document, "payload." + draw(extra_names), _wrap(draw, draw(unstorable_numbers)))
    return "unstorable number in payload"


def _deep_payload(draw: Draw, document: dict[str, Any], source: Source) -> str:
    depth = draw(st.integers(30, 2000))
    # From 34 levels the nesting alone is too deep (the limit is 32, whatever one counts as the
    # first level); shallower ones end in an unstorable number so that they are invalid too.
    if depth >= 34:
        leaf = draw(st.sampled_from(["0", "null", '"x"', "true", "[]", "{}"]))
    else:
        leaf = str(draw(unstorable_numbers))
    shape = draw(st.sampled_from(["list", "object", "mixed"]))
    _set(document, "payload." + draw(extra_names), nest(depth, shape, leaf))
    return "deep nesting in payload"


def _bad_nested_key(draw: Draw, document: dict[str, Any], source: Source) -> str:
    # The bad key goes directly into payload or into an object nested in it.
    if isinstance(document.get("payload"), dict) and draw(st.booleans()):
        document["payload"][draw(bad_keys)] = draw(json_scalars)
    else:
        inner = {draw(bad_keys): draw(json_scalars)}
        _set(document, "payload." + draw(extra_names), _wrap(draw, inner))
    return "unstorable key in payload"


def _source_mismatch(draw: Draw, document: dict[str, Any], source: Source) -> str:
    others = st.sampled_from(sorted(SOURCE_NAMES | {"ups", "dpd"})) | st.text(
        st.sampled_from(SOURCE_CHARS), min_size=1, max_size=20
    ).map(lambda text: "x" + text)
    document["source"] = draw(others.filter(lambda name: name != source.name))
    return "source mismatch"


DocumentDefect = Callable[[Draw, dict[str, Any], Source], str]
DOCUMENT_DEFECTS: tuple[DocumentDefect, ...] = (
    _wrong_type,
    _bad_value,
    _missing,
    _unstorable_number,
    _deep_payload,
    _bad_nested_key,
    _source_mismatch,
)


@st.composite
def invalid_documents(draw: Draw, source: Source) -> tuple[bytes, list[str]]:
    """A JSON object shaped like an event, with 1-3 structural defects (each one is enough)."""
    document = event(source=source.name) if draw(st.booleans()) else event()
    defects = [
        defect
        for defect in DOCUMENT_DEFECTS
        if defect is not _source_mismatch or source.name != DEFAULT_SOURCE
    ]
    chosen = draw(st.lists(st.sampled_from(defects), min_size=1, max_size=3))
    applied = [defect(draw, document, source) for defect in chosen]
    return to_json(document, ascii_only=draw(st.booleans())).encode(), applied


# --- strategies: malformed bodies --------------------------------------------------------------


@st.composite
def broken_utf8_in_event(draw: Draw) -> bytes:
    document = event()
    marker = "MARKER"  # upper case: event() ids are lower-case hex
    field = draw(st.sampled_from(["eventId", "shipmentId", "note"]))
    if field == "eventId":
        document["eventId"] += marker + "z"
    else:
        document["payload"][field] = f"a{marker}z"
    return to_json(document).encode().replace(marker.encode(), draw(st.sampled_from(BROKEN_UTF8)))


@st.composite
def truncated_event(draw: Draw) -> bytes:
    body = valid_body()
    return body[: draw(st.integers(0, len(body) - 1))]


JSON_WHITESPACE = " \t\n\r"
arbitrary_bytes = st.builds(
    splice_bytes, st.binary(max_size=600), st.sampled_from(NEVER_UTF8), st.integers()
)
trailing_garbage = st.builds(
    lambda suffix: valid_body() + suffix.encode(),
    st.text(UTF8, min_size=1, max_size=40).filter(lambda text: text.strip(JSON_WHITESPACE)),
)
# Text that cannot be an event: an event needs a "payload" key, spelt out or with escapes.
random_text = (
    st.text(UTF8, max_size=300)
    .filter(lambda text: "payload" not in text and "\\" not in text)
    .map(str.encode)
)
non_object_json = st.one_of(
    json_values.filter(lambda value: not isinstance(value, dict)), unstorable_numbers
).map(lambda value: to_json(value).encode())
deep_top_level = deep_values.map(lambda value: str(value).encode())
blank = st.sampled_from([b"", b" ", b"\n", b"\r\n\t "])

MALFORMED: tuple[tuple[str, st.SearchStrategy[bytes]], ...] = (
    ("arbitrary bytes with broken UTF-8", arbitrary_bytes),
    ("broken UTF-8 in a string", broken_utf8_in_event()),
    ("truncated JSON", truncated_event()),
    ("trailing garbage", trailing_garbage),
    ("random text", random_text),
    ("JSON but not an object", non_object_json),
    ("deep nesting at the top level", deep_top_level),
    ("blank body", blank),
)


@st.composite
def malformed_bodies(draw: Draw) -> tuple[bytes, list[str]]:
    label, strategy = draw(st.sampled_from(MALFORMED))
    return draw(strategy), [label]


def invalid_bodies(source: Source) -> st.SearchStrategy[tuple[bytes, list[str]]]:
    return st.one_of(invalid_documents(source), malformed_bodies())


# --- strategies: whole requests ----------------------------------------------------------------


@st.composite
def signed_invalid_documents(draw: Draw) -> Attempt:
    source = draw(st.sampled_from(SOURCES))
    body, defects = draw(invalid_documents(source))
    headers = signature(source, body) + draw(harmless_headers)
    return Attempt(source.name, body, headers, defects, expected=400)


@st.composite
def signed_malformed_bodies(draw: Draw) -> Attempt:
    source = draw(st.sampled_from(SOURCES))
    body, defects = draw(malformed_bodies())
    headers = signature(source, body) + draw(harmless_headers)
    return Attempt(source.name, body, headers, defects, expected=400)


Forgery = Callable[[Draw, Source, bytes], Headers]


def _flipped_digit(draw: Draw, source: Source, body: bytes) -> Headers:
    headers = signature(source, body)
    correct = value_of(headers, "x-signature")
    at = draw(st.integers(0, len(correct) - 1))
    digit = draw(st.sampled_from([char for char in "0123456789abcdef" if char != correct[at]]))
    return replaced(headers, "x-signature", correct[:at] + digit + correct[at + 1 :])


def _random_hex(draw: Draw, source: Source, body: bytes) -> Headers:
    random_digest = draw(st.binary(min_size=32, max_size=32)).hex()
    return replaced(signature(source, body), "x-signature", random_digest)


def _another_secret(draw: Draw, source: Source, body: bytes) -> Headers:
    secrets = {COURIER_SECRET, LEGACY_SECRET, LIMITED_SECRET, "another-secret-0002"}
    other = draw(st.sampled_from(sorted(secrets - {source.secret})))
    return signature(source, body, key=other.encode())


def _another_body(draw: Draw, source: Source, body: bytes) -> Headers:
    return signature(source, draw(st.sampled_from([body + b" ", valid_body(source)])))


def _algorithm_mismatch(draw: Draw, source: Source, body: bytes) -> Headers:
    pairs = [("hmac-sha512", "hmac-sha256"), ("hmac-sha256", "hmac-sha512"), ("hmac-sha512", None)]
    signed_with, claimed = draw(st.sampled_from(pairs))
    headers = signature(source, body, algorithm=signed_with)
    if claimed is None:  # without the header, hmac-sha256 is assumed
        return without(headers, "x-signature-algorithm")
    return replaced(headers, "x-signature-algorithm", claimed)


def _wrong_length(draw: Draw, source: Source, body: bytes) -> Headers:
    headers = signature(source, body)
    correct = value_of(headers, "x-signature")
    extra = draw(st.text(st.sampled_from("0123456789abcdef"), min_size=1, max_size=8))
    cut = correct[: draw(st.integers(0, len(correct) - 1))]
    return replaced(headers, "x-signature", draw(st.sampled_from([cut, correct + extra])))


def _not_hex(draw: Draw, source: Source, body: bytes) -> Headers:
    headers = signature(source, body)
    correct = value_of(headers, "x-signature")
    at = draw(st.integers(0, len(correct) - 1))
    char = draw(st.sampled_from("gxzG+/=_."))
    return replaced(headers, "x-signature", correct[:at] + char + correct[at + 1 :])


def _other_timestamp(header: str) -> Forgery:
    """The signature is right for one fresh timestamp; the header carries another fresh one."""

    def forge(draw: Draw, source: Source, body: bytes) -> Headers:
        now = int(time.time())
        shift = draw(st.integers(-120, 120).filter(bool))
        return replaced(signature(source, body, timestamp=now), header, str(now + shift))

    return forge


def _scheme(scheme: Scheme) -> Forgery:
    """Signed with the right key under another scheme."""

    def forge(draw: Draw, source: Source, body: bytes) -> Headers:
        return signature(source, body, scheme=scheme)

    return forge


def _wrong_candidate(draw: Draw, correct: str) -> str:
    """A ``webhook-signature`` entry that does not verify: wrong bytes, version or base64."""
    kind = draw(st.sampled_from(["flipped bit", "random", "bad version", "bad base64"]))
    encoded = correct.removeprefix("v1,")
    digest = bytearray(base64.b64decode(encoded))
    if kind == "flipped bit":
        digest[draw(st.integers(0, len(digest) - 1))] ^= 1 << draw(st.integers(0, 7))
        return "v1," + base64.b64encode(digest).decode()
    if kind == "random":
        return "v1," + base64.b64encode(draw(st.binary(max_size=64))).decode()
    if kind == "bad version":
        return draw(st.sampled_from(["v2,", "v1a,", "v0,", "", "v1=", "v1;", "v1 "])) + encoded
    broken = [encoded.rstrip("="), encoded[:-5] + "!" + encoded[-4:], encoded + "A"]
    return "v1," + draw(st.sampled_from(broken))


def _wrong_candidates(draw: Draw, source: Source, body: bytes) -> Headers:
    headers = signature(source, body)
    correct = value_of(headers, "webhook-signature")
    candidates = [_wrong_candidate(draw, correct) for _ in range(draw(st.integers(1, 4)))]
    return replaced(headers, "webhook-signature", " ".join(candidates))


def _another_webhook_key(draw: Draw, source: Source, body: bytes) -> Headers:
    return signature(source, body, key=b"another-dhl-key-32-bytes-long-000")


def _another_webhook_id(draw: Draw, source: Source, body: bytes) -> Headers:
    return replaced(signature(source, body), "webhook-id", f"msg_{uuid.uuid4().hex}")


X_SIGNATURE_FORGERIES: dict[str, Forgery] = {
    "flipped digit": _flipped_digit,
    "random signature": _random_hex,
    "another key": _another_secret,
    "another body": _another_body,
    "algorithm mismatch": _algorithm_mismatch,
    "wrong length": _wrong_length,
    "not hex": _not_hex,
    "standard-webhooks headers": _scheme(Scheme.STANDARD_WEBHOOKS),
}
FORGERIES: dict[Scheme, dict[str, Forgery]] = {
    Scheme.V1: X_SIGNATURE_FORGERIES
    | {
        "other timestamp": _other_timestamp("x-signature-timestamp"),
        "body-only (legacy-body) signature": _scheme(Scheme.LEGACY_BODY),
    },
    # legacy-body does not sign the timestamp, so another timestamp is no forgery there.
    Scheme.LEGACY_BODY: X_SIGNATURE_FORGERIES
    | {"timestamp.body (v1) signature": _scheme(Scheme.V1)},
    Scheme.STANDARD_WEBHOOKS: {
        "wrong candidates": _wrong_candidates,
        "another key": _another_webhook_key,
        "another body": _another_body,
        "other timestamp": _other_timestamp("webhook-timestamp"),
        "other webhook-id": _another_webhook_id,
        "x-signature headers": _scheme(Scheme.V1),
    },
}


@st.composite
def wrong_signatures(draw: Draw) -> Attempt:
    """A valid event whose signature does not verify."""
    source = draw(st.sampled_from(SOURCES))
    body = valid_body(source) if draw(st.booleans()) else valid_body()
    forgeries = FORGERIES[source.scheme]
    defect = draw(st.sampled_from(sorted(forgeries)))
    headers = forgeries[defect](draw, source, body) + draw(harmless_headers)
    return Attempt(source.name, body, headers, [f"signature: {defect}"], expected=401)


malformed_timestamps = st.one_of(
    st.sampled_from(["", "-1", "1.5", "0x1f", "1e9", "now", "NaN", "17 00", "+1700000000"]),
    st.text(st.sampled_from(string.digits), min_size=13, max_size=20),
    st.builds(
        lambda now, suffix: f"{now}{suffix}",
        st.just(int(time.time())),
        st.sampled_from([".0", ".5", "s", "Z"]),
    ),
    header_text.filter(lambda text: not re.fullmatch(r"[0-9]{1,12}", text)),
    header_bytes.filter(lambda raw: not re.fullmatch(rb"[0-9]{1,12}", raw)),
)
unsupported_algorithms = st.one_of(
    st.sampled_from(
        ["md5", "sha256", "sha512", "hmac-sha1", "hmac-sha384", "hmac-sha3-256", "hmac_sha256"]
    ),
    st.builds(str.__add__, st.sampled_from(["hmac-", "HMAC-SHA", "sha", "x"]), header_text).filter(
        lambda text: text.strip().lower() not in ALGORITHMS
    ),
    non_ascii_header_bytes,
)
bad_webhook_ids = st.one_of(
    st.just(""),
    st.builds(
        lambda left, right: f"{left} {right}",
        st.text(ID_CHARS, min_size=1, max_size=10),
        st.text(ID_CHARS, min_size=1, max_size=10),
    ),
    st.text(ID_CHARS, min_size=257, max_size=300),
    non_ascii_header_bytes,
)


def _name_variant(draw: Draw, name: str) -> str:
    return str(draw(st.sampled_from([name, name.upper(), name.title()])))


@st.composite
def bad_signature_headers(draw: Draw) -> Attempt:
    """Missing or duplicated signature headers, malformed, stale or future timestamps, an
    unsupported algorithm or a malformed webhook id; the body is anything at all."""
    source = draw(st.sampled_from(SOURCES))
    if draw(st.booleans()):
        body, _ = draw(invalid_bodies(source))
    else:
        body = valid_body(source)
    timing = draw(st.sampled_from(["fresh", "stale", "future"]))
    now = int(time.time())
    timestamp = {
        "fresh": now,
        "stale": now - draw(st.integers(FRESHNESS_MARGIN, 10**9)),
        "future": now + draw(st.integers(FRESHNESS_MARGIN, 10**11)),
    }[timing]
    kinds = ["duplicate", "missing", "malformed timestamp"]
    kinds.append("bad webhook-id" if source.scheme is Scheme.STANDARD_WEBHOOKS else "bad algorithm")
    chosen = draw(
        st.lists(
            st.sampled_from(kinds), min_size=1 if timing == "fresh" else 0, max_size=3, unique=True
        )
    )
    defects = [f"{timing} timestamp"] if timing != "fresh" else []
    headers = signature(source, body, timestamp=timestamp)
    timestamp_header = (
        "webhook-timestamp"
        if source.scheme is Scheme.STANDARD_WEBHOOKS
        else "x-signature-timestamp"
    )
    # Each step keeps the request invalid, whatever the steps after it do.
    if "duplicate" in chosen:
        present = sorted({key for key, _ in headers} - {"content-type"})
        name = draw(st.sampled_from(present))
        again = draw(st.one_of(st.just(value_of(headers, name)), header_values))
        headers.append((_name_variant(draw, name), again))
        defects.append(f"duplicate header: {name}")
    if "missing" in chosen:
        names = draw(st.lists(st.sampled_from(source.required_headers), min_size=1, unique=True))
        for name in names:
            headers = without(headers, name)
        defects.append(f"missing header: {', '.join(names)}")
    if "malformed timestamp" in chosen:
        headers = replaced(headers, timestamp_header, draw(malformed_timestamps))
        defects.append("malformed timestamp")
    if "bad algorithm" in chosen:
        headers = replaced(headers, "x-signature-algorithm", draw(unsupported_algorithms))
        defects.append("unsupported algorithm")
    if "bad webhook-id" in chosen:
        headers = replaced(headers, "webhook-id", draw(bad_webhook_ids))
        defects.append("malformed webhook-id")
    return Attempt(source.name, body, headers + draw(harmless_headers), defects, expected=401)


def _not_json_media_type(value: str | bytes) -> bool:
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    return text.partition(";")[0].strip().lower() != "application/json"


bad_media_types = st.one_of(
    st.sampled_from(
        [
            "text/plain",
            "text/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonp",
            "application/json5",
            "application/octet-stream",
            "application/*",
            "*/*",
            "json",
            "application",
            "",
            "application/javascript",
            "text/html; charset=utf-8",
            "application/json, text/plain",
        ]
    ),
    header_values.filter(_not_json_media_type),
)
bad_charsets = st.one_of(
    st.sampled_from(
        ["", "latin-1", "iso-8859-1", "utf-16", "UTF-16LE", "utf-32", "cp1252", "utf-8x", '"utf-7"']
    ),
    st.text(
        st.sampled_from(string.ascii_letters + string.digits + "-_"), min_size=1, max_size=20
    ).filter(lambda text: text.lower() not in {"utf-8", "utf8"}),
)
any_content_type = st.one_of(
    st.sampled_from(["application/json", "application/json; charset=utf-8"]), bad_media_types
)


@st.composite
def wrong_content_types(draw: Draw) -> Attempt:
    source = draw(st.sampled_from(SOURCES))
    body = valid_body(source) if draw(st.booleans()) else draw(invalid_bodies(source))[0]
    headers = without(signature(source, body), "content-type")
    kind = draw(st.sampled_from(["missing", "duplicate", "media type", "charset"]))
    if kind == "duplicate":
        headers += [
            ("content-type", draw(any_content_type)),
            (_name_variant(draw, "content-type"), draw(any_content_type)),
        ]
    elif kind == "media type":
        headers.append(("content-type", draw(bad_media_types)))
    elif kind == "charset":
        parameter = draw(
            st.sampled_from(["charset={}", "Charset={}", " charset = {}", "q=1; charset={}"])
        )
        headers.append(
            ("content-type", "application/json; " + parameter.format(draw(bad_charsets)))
        )
    return Attempt(
        source.name, body, headers + draw(harmless_headers), [f"content-type: {kind}"], 415
    )


ALL_HEADER_NAMES = [
    "content-type",
    "x-signature",
    "x-signature-timestamp",
    "x-signature-algorithm",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
]


@st.composite
def arbitrary_requests(draw: Draw) -> Attempt:
    """Anything goes: any path, method and header set; the body is always invalid."""
    source = draw(st.sampled_from(SOURCES))
    if draw(st.integers(0, 3)) == 0:
        name = draw(st.text(UTF8, max_size=40).filter(lambda text: text not in SOURCE_NAMES))
        path, defects = quote(name, safe=""), ["unknown source"]
    else:
        path, defects = source.name, []
    body, body_defects = draw(invalid_bodies(source))
    headers = signature(source, body) if draw(st.booleans()) else []
    for name, action, value in draw(
        st.lists(
            st.tuples(
                st.sampled_from(ALL_HEADER_NAMES),
                st.sampled_from(["drop", "add", "set"]),
                header_values,
            ),
            max_size=5,
        )
    ):
        if action == "drop":
            headers = without(headers, name)
        elif action == "add":
            headers.append((_name_variant(draw, name), value))
        else:
            headers = replaced(headers, name, value)
    method = draw(st.sampled_from(["POST", "POST", "POST", "PUT", "PATCH", "DELETE", "GET"]))
    if method != "POST":
        defects.append(f"method: {method}")
    return Attempt(
        path,
        body,
        headers + draw(harmless_headers),
        defects + body_defects,
        None,
        method=method,
        chunked=draw(st.booleans()),
    )


# --- the properties ------------------------------------------------------------------------------


@settings(FUZZ, max_examples=400)
@given(attempt=signed_invalid_documents())
def test_signed_but_structurally_invalid_events_are_refused(client, stream_length, attempt) -> None:
    fuzz(client, stream_length, attempt)


@settings(FUZZ, max_examples=250)
@given(attempt=signed_malformed_bodies())
def test_signed_malformed_bodies_are_refused(client, stream_length, attempt) -> None:
    fuzz(client, stream_length, attempt)


@settings(FUZZ, max_examples=250)
@given(attempt=wrong_signatures())
def test_valid_events_with_a_wrong_signature_are_refused(client, stream_length, attempt) -> None:
    fuzz(client, stream_length, attempt)


@settings(FUZZ, max_examples=250)
@given(attempt=bad_signature_headers())
def test_bad_signature_headers_and_timestamps_are_refused(client, stream_length, attempt) -> None:
    fuzz(client, stream_length, attempt)


@settings(FUZZ, max_examples=150)
@given(attempt=wrong_content_types())
def test_wrong_content_types_are_refused(client, stream_length, attempt) -> None:
    fuzz(client, stream_length, attempt)


@settings(FUZZ, max_examples=200)
@given(attempt=arbitrary_requests())
def test_arbitrary_invalid_requests_are_refused(client, stream_length, attempt) -> None:
    fuzz(client, stream_length, attempt)


# --- invalid input found by this fuzzer and since refused --------------------------------------


@pytest.mark.parametrize("occurred_at", ["1767225600", "0", "-1", "1767225600.5", "99999999999999"])
def test_numeric_occurred_at_is_refused(client, stream_length, occurred_at) -> None:
    body = to_json(event(occurredAt=occurred_at)).encode()
    attempt = Attempt("courier", body, signature(SOURCES[0], body), ["numeric occurredAt"], 400)
    assert_refused(client, stream_length, attempt)


@pytest.mark.parametrize("name", ["$where", "a.b", "a\x00b"])
def test_unstorable_payload_field_name_is_refused(client, stream_length, name) -> None:
    document = event()
    document["payload"][name] = 1
    body = to_json(document).encode()
    attempt = Attempt("courier", body, signature(SOURCES[0], body), ["payload field name"], 400)
    assert_refused(client, stream_length, attempt)
