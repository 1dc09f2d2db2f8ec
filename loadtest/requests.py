"""Pre-signed raw HTTP/1.1 requests for wrk, written as a Lua file that returns a table of strings.

The mix is described by :class:`Mix`: a number of unique events, a share of re-sent copies of
earlier events (duplicates: the same bytes, so the same signature and idempotency key), a share of
out-of-order events (an existing shipment's event with an earlier ``occurredAt`` than its first
one), how many in-order events a shipment gets on average (each continues one of the 64 most
recent shipments with a later ``occurredAt``) and a padding field inside ``payload`` that brings
each body to a target size. Sources and their schemes (``v1`` by default; ``standard-webhooks``
and ``legacy-body`` on request) are taken in turn per shipment, so all events of a shipment come
from one source.

Signatures carry the time of generation: the gateway accepts them for its tolerance (300 s by
default), so a file is generated just before the run that sends it.

The Lua is plain string literals with ``\\r\\n``, ``\\"`` and ``\\\\`` escapes; long brackets
(``[[...]]``) are not used because Lua turns the CRLF inside them into LF. Literals are grouped in
functions of a few thousand each, because LuaJIT limits the constants of one function.
"""

from __future__ import annotations

import random
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from courier_gateway.config.sources import DEFAULT_SOURCE, Scheme, decode_secret
from courier_gateway.signatures import sign
from courier_gateway.worker.shipments import FINAL_STATUSES
from courier_gateway.worker.shipments import STATUSES as WORKER_STATUSES

__all__ = [
    "Generated",
    "Mix",
    "SourceSpec",
    "generate",
    "lua_string",
    "raw_request",
    "write_lua",
]

#: Statuses used by the generator: the worker's, without the final ones, so no event is an
#: invalid transition.
STATUSES = tuple(sorted(WORKER_STATUSES - FINAL_STATUSES))
_CHUNK = 4000
_OTHER_BYTES = re.compile(r"[^\x20-\x7e]")
#: Start of the generated timeline; events follow it in minutes.
_EPOCH = datetime(2026, 11, 1, tzinfo=UTC)
#: New events continue one of this many most recent shipments.
_OPEN_SHIPMENTS = 64


@dataclass(frozen=True)
class SourceSpec:
    """A source to post to: its name (the URL path), scheme and secret as configured."""

    name: str
    scheme: Scheme
    secret: str = field(repr=False)

    @property
    def key(self) -> bytes:
        """The HMAC key bytes (``whsec_`` secrets are base64)."""
        return decode_secret(self.scheme, self.secret)

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        """``NAME:SCHEME:SECRET`` (the secret may contain ':')."""
        name, scheme, secret = text.split(":", 2)
        return cls(name, Scheme(scheme), secret)


@dataclass(frozen=True)
class Mix:
    """What to generate.

    ``duplicate_ratio`` is the share of all requests that are re-sent copies, so ``events=900``
    with ``0.1`` makes 1,000 requests of which 100 are duplicates.
    """

    events: int
    sources: tuple[SourceSpec, ...]
    duplicate_ratio: float = 0.0
    out_of_order_ratio: float = 0.0
    payload_bytes: int = 0
    #: Mean in-order events per shipment: 1 makes every in-order event a new shipment.
    events_per_shipment: float = 3.0
    host: str = "127.0.0.1"
    seed: int = 1
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    def __post_init__(self) -> None:
        if self.events < 1:
            raise ValueError("events must be at least 1")
        if not 0 <= self.duplicate_ratio < 1:
            raise ValueError("the duplicate ratio must be in [0, 1)")
        if not 0 <= self.out_of_order_ratio <= 1:
            raise ValueError("the out-of-order ratio must be in [0, 1]")
        if not self.sources:
            raise ValueError("give at least one source")
        if self.events_per_shipment < 1:
            raise ValueError("events per shipment must be at least 1")

    @property
    def duplicates(self) -> int:
        """How many re-sent copies the ratio asks for."""
        return round(self.events * self.duplicate_ratio / (1 - self.duplicate_ratio))

    @property
    def requests(self) -> int:
        """Unique events plus duplicates."""
        return self.events + self.duplicates


@dataclass(frozen=True)
class Generated:
    """A written request file and what is in it."""

    path: Path
    requests: int
    unique: int
    duplicates: int
    out_of_order: int
    signed_at: int
    mean_body_bytes: float
    sources: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        return {
            "file": str(self.path),
            "requests": self.requests,
            "unique": self.unique,
            "duplicates": self.duplicates,
            "outOfOrder": self.out_of_order,
            "signedAt": self.signed_at,
            "meanBodyBytes": round(self.mean_body_bytes, 1),
            "sources": list(self.sources),
        }


@dataclass
class _Shipment:
    id: str
    order: str
    source: SourceSpec
    first: datetime
    last: datetime


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def raw_request(
    source: SourceSpec, body: bytes, *, host: str, timestamp: int, webhook_id: str
) -> bytes:
    """One complete signed ``POST /v1/events/{source}`` request."""
    headers = sign(source.scheme, body, source.key, timestamp=timestamp, webhook_id=webhook_id)
    lines = [
        f"POST /v1/events/{source.name} HTTP/1.1",
        f"Host: {host}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def lua_string(data: bytes) -> str:
    """A double-quoted Lua literal of ``data`` (control bytes and non-ASCII as ``\\ddd``)."""
    text = data.decode("latin-1")
    for plain, escaped in (("\\", "\\\\"), ('"', '\\"'), ("\r", "\\r"), ("\n", "\\n")):
        text = text.replace(plain, escaped)
    return '"' + _OTHER_BYTES.sub(lambda match: f"\\{ord(match.group()):03d}", text) + '"'


def _padded(document: dict[str, Any], target: int) -> bytes:
    body = orjson.dumps(document)
    if target <= len(body):
        return body
    # ',"padding":""' adds 13 bytes before the padding itself.
    document["payload"]["padding"] = "x" * max(0, target - len(body) - 13)
    return orjson.dumps(document)


def _bodies(mix: Mix, rng: random.Random) -> tuple[list[tuple[SourceSpec, str, bytes]], int]:
    """The unique events in sending order: (source, event id, body); and the out-of-order count."""
    out_of_order = set(
        rng.sample(
            range(1, mix.events), min(mix.events - 1, round(mix.events * mix.out_of_order_ratio))
        )
        if mix.events > 1
        else []
    )
    shipments: list[_Shipment] = []
    events: list[tuple[SourceSpec, str, bytes]] = []
    for index in range(mix.events):
        if index in out_of_order:
            shipment = rng.choice(shipments)
            occurred = shipment.first - timedelta(minutes=rng.randint(1, 600))
        elif not shipments or rng.random() < 1 / mix.events_per_shipment:
            number = len(shipments)
            start = _EPOCH + timedelta(minutes=number % 10_000)
            shipment = _Shipment(
                id=f"shp_{mix.run_id}_{number:07d}",
                order=f"ord_{mix.run_id}_{number:07d}",
                source=mix.sources[number % len(mix.sources)],
                first=start,
                last=start,
            )
            shipments.append(shipment)
            occurred = start
        else:
            shipment = rng.choice(shipments[-_OPEN_SHIPMENTS:])
            occurred = shipment.last + timedelta(minutes=rng.randint(1, 120))
            shipment.last = occurred
        event_id = f"evt_{mix.run_id}_{index:07d}"
        document = {
            "eventId": event_id,
            "eventType": "shipment.status.updated",
            "occurredAt": _iso(occurred),
            "source": shipment.source.name,
            "payload": {
                "shipmentId": shipment.id,
                "orderId": shipment.order,
                "status": rng.choice(STATUSES),
            },
        }
        if shipment.source.name == DEFAULT_SOURCE:
            del document["source"]  # the default source's own path fills it in
        events.append((shipment.source, event_id, _padded(document, mix.payload_bytes)))
    return events, len(out_of_order)


def generate(mix: Mix, path: Path, *, timestamp: int | None = None) -> Generated:
    """Write the Lua request file for ``mix`` to ``path``; sign with ``timestamp`` (now)."""
    rng = random.Random(mix.seed)
    signed_at = int(time.time()) if timestamp is None else timestamp
    events, out_of_order = _bodies(mix, rng)
    requests = [
        raw_request(source, body, host=mix.host, timestamp=signed_at, webhook_id=f"msg_{event_id}")
        for source, event_id, body in events
    ]
    # Each copy goes after its original: copy of a random event at or before a random point.
    after: dict[int, list[int]] = {}
    for _ in range(mix.duplicates):
        point = rng.randrange(mix.events)
        after.setdefault(point, []).append(rng.randint(0, point))
    ordered: list[bytes] = []
    for index, request in enumerate(requests):
        ordered.append(request)
        ordered.extend(requests[original] for original in after.get(index, ()))
    write_lua(path, ordered, f"{len(ordered)} requests, signed at {signed_at}")
    return Generated(
        path=path,
        requests=len(ordered),
        unique=mix.events,
        duplicates=mix.duplicates,
        out_of_order=out_of_order,
        signed_at=signed_at,
        mean_body_bytes=sum(len(body) for _, _, body in events) / len(events),
        sources=tuple(source.name for source in mix.sources),
    )


def write_lua(path: Path, requests: list[bytes], comment: str) -> None:
    """Write raw requests as the Lua table wrk's script reads."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="ascii") as out:
        out.write(f"-- generated by loadtest/requests.py: {comment}\n")
        out.write("local r, n = {}, 0\n")
        out.write(
            "local function add(list) for i = 1, #list do n = n + 1; r[n] = list[i] end end\n"
        )
        for start in range(0, len(requests), _CHUNK):
            out.write("add((function() return {\n")
            for request in requests[start : start + _CHUNK]:
                out.write(lua_string(request))
                out.write(",\n")
            out.write("} end)())\n")
        out.write("return r\n")
