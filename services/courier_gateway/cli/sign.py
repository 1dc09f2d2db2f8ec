"""``courier-gateway sign``: a signed request for a given or generated event, ready to run.

The secret comes from ``--secret``, else from the configuration the ingress would use
(``SIGNING_SECRET`` for the default source, the first key of the source in ``SOURCES_FILE``),
completed from ``.data/env`` in a checkout where ``make dev`` runs: the printed request then
targets that stack's real port and is signed with its secret.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from courier_gateway.cli.parsing import UsageError

if TYPE_CHECKING:
    from courier_gateway.config import Scheme, Settings

__all__ = [
    "add_arguments",
    "build_request",
    "curl_command",
    "read_secret_file",
    "run",
    "sample_event",
]

#: The signature schemes and HMAC algorithms (``config.sources.Scheme``, ``signatures``),
#: spelled out so that parsing the command line does not load the configuration package.
SCHEMES = ("v1", "standard-webhooks", "legacy-body")
ALGORITHMS = ("hmac-sha256", "hmac-sha512")
DEFAULT_SOURCE = "courier"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``sign`` options."""
    parser.add_argument(
        "event_file", nargs="?", type=Path, help="JSON event to sign (default: a generated sample)"
    )
    parser.add_argument("--source", default=DEFAULT_SOURCE, help="source to post to (courier)")
    parser.add_argument("--scheme", choices=SCHEMES, help="signature scheme")
    keys = parser.add_mutually_exclusive_group()
    keys.add_argument("--secret", help="signing secret (default: from the configuration)")
    keys.add_argument(
        "--secret-file",
        type=Path,
        help="read the secret from a key file, or from the newest key file of a directory"
        " (a mounted Secret of a source)",
    )
    parser.add_argument("--algorithm", choices=ALGORITHMS, default="hmac-sha256")
    parser.add_argument("--url", help="gateway base URL (default: http://API_HOST:API_PORT)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print url, headers and body as JSON")
    output.add_argument(
        "--send", action="store_true", help="post it; exit 0 only when the gateway answers 202"
    )
    sample = parser.add_argument_group("the generated sample event (without EVENT_FILE)")
    sample.add_argument("--event-id", help="its eventId (default: a new evt_… id)")
    sample.add_argument("--shipment-id", help="its payload.shipmentId (default: a new shp_… id)")
    sample.add_argument("--status", help="its payload.status (in_transit)")
    sample.add_argument("--event-type", help="its eventType (shipment.status.updated)")


def sample_event(
    source: str,
    *,
    event_id: str | None = None,
    shipment_id: str | None = None,
    status: str = "in_transit",
    event_type: str = "shipment.status.updated",
) -> dict[str, Any]:
    """A fresh shipment event (new ids each time unless given)."""
    suffix = uuid.uuid4().hex[:12]
    return {
        "eventId": event_id or f"evt_{suffix}",
        "eventType": event_type,
        "occurredAt": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "source": source,
        "payload": {
            "shipmentId": shipment_id or f"shp_{suffix}",
            "orderId": f"ord_{suffix}",
            "status": status,
        },
    }


def build_request(
    body: bytes, *, scheme: Scheme, secret: bytes, algorithm: str = "hmac-sha256"
) -> dict[str, str]:
    """Headers (content type included) that make ``body`` a valid request now."""
    from courier_gateway.signatures import sign

    headers = {"content-type": "application/json"}
    headers.update(
        sign(
            scheme,
            body,
            secret,
            timestamp=int(time.time()),
            webhook_id=f"msg_{uuid.uuid4().hex}",
            algorithm=algorithm,
        )
    )
    return headers


def curl_command(url: str, headers: dict[str, str], body: bytes) -> str:
    """A shell-safe curl command line that posts ``body`` with ``headers``."""
    parts = ["curl", "-sS", "-X", "POST", shlex.quote(url)]
    for name, value in headers.items():
        parts += ["-H", shlex.quote(f"{name}: {value}")]
    parts += ["--data-binary", shlex.quote(body.decode())]
    return " ".join(parts)


def read_secret_file(path: Path) -> str:
    """The secret in a key file, or in the last key file (by name) of a directory.

    The operator names keys by creation time, so the last name is the active key.
    """
    if path.is_dir():
        files = sorted(
            entry for entry in path.iterdir() if entry.is_file() and not entry.name.startswith(".")
        )
        if not files:
            raise UsageError(f"--secret-file: {path} holds no key file")
        path = files[-1]
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"--secret-file: {path} cannot be read ({error})") from None


def _resolve(args: argparse.Namespace, settings: Settings) -> tuple[Scheme, bytes]:
    from courier_gateway.config import ConfigError, Scheme, load_sources
    from courier_gateway.config.sources import decode_secret

    scheme = Scheme(args.scheme) if args.scheme else None
    if args.secret_file is not None:
        args.secret = read_secret_file(args.secret_file)
    if args.secret:
        # Sign the way the gateway will verify: the source's configured scheme, if any.
        scheme = scheme or _configured_scheme(args.source, settings) or Scheme.V1
        try:
            return scheme, decode_secret(scheme, args.secret)
        except ValueError as error:
            raise UsageError(f"--secret: {error}") from None
    source = load_sources(settings).get(args.source)
    if source is None and args.source == DEFAULT_SOURCE:
        raise ConfigError(
            "SIGNING_SECRET: is required to sign for the default source (or pass --secret,"
            " or define sources in SOURCES_FILE)"
        )
    if source is None:
        raise UsageError(
            f"--source: no source named {args.source!r} is configured; pass --secret"
            " or configure it (SIGNING_SECRET, SOURCES_FILE)"
        )
    return scheme or source.scheme, source.keys[0].secret


def _configured_scheme(source: str, settings: Settings) -> Scheme | None:
    from courier_gateway.config import ConfigError, load_sources

    try:
        found = load_sources(settings).get(source)
    except ConfigError:
        return None
    return found.scheme if found else None


def _body(args: argparse.Namespace) -> bytes:
    import orjson

    sample_options = (args.event_id, args.shipment_id, args.status, args.event_type)
    if args.event_file is None:
        return orjson.dumps(
            sample_event(
                args.source,
                event_id=args.event_id,
                shipment_id=args.shipment_id,
                status=args.status or "in_transit",
                event_type=args.event_type or "shipment.status.updated",
            )
        )
    if any(sample_options):
        raise UsageError(
            "--event-id, --shipment-id, --status and --event-type shape the generated sample;"
            " edit EVENT_FILE instead"
        )
    try:
        body: bytes = args.event_file.read_bytes()
    except OSError as error:
        raise UsageError(f"{args.event_file}: cannot be read ({error.strerror})") from None
    try:
        orjson.loads(body)
    except orjson.JSONDecodeError:
        raise UsageError(f"{args.event_file}: is not valid JSON") from None
    return body


def run(args: argparse.Namespace) -> int:
    """Print the signed request; exit code 2 names a missing secret or unreadable event file."""
    import orjson

    from courier_gateway.cli.environment import command_settings

    settings = command_settings().settings
    body = _body(args)
    scheme, secret = _resolve(args, settings)
    headers = build_request(body, scheme=scheme, secret=secret, algorithm=args.algorithm)
    base = args.url or f"http://{settings.api_host}:{settings.api_port}"
    url = f"{base.rstrip('/')}/v1/events/{args.source}"
    if args.send:
        return _send(url, headers, body)
    if args.json:
        document = {"url": url, "headers": headers, "body": body.decode()}
        sys.stdout.write(orjson.dumps(document, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(curl_command(url, headers, body) + "\n")
    return 0


def _send(url: str, headers: dict[str, str], body: bytes) -> int:
    """Post the request and report the answer (a smoke test, e.g. ``helm test``)."""
    import httpx

    try:
        response = httpx.post(url, headers=headers, content=body, timeout=10)
    except httpx.HTTPError as error:
        sys.stderr.write(f"courier-gateway sign: {url}: {type(error).__name__}: {error}\n")
        return 1
    sys.stdout.write(f"{response.status_code} {response.text.strip()}\n")
    return 0 if response.status_code == 202 else 1
