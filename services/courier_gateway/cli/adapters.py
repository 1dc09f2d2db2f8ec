"""``courier-gateway adapters list|check``: what adapters exist, and what a payload becomes.

``check`` runs an adapter on a payload file with no server, Redis or store: it prints the
canonical events (and the unmapped and ignored items), or the precise error the ingress would
answer with 400. Given ``--secret`` and the provider's ``--header``s it also verifies a captured
request, printing the check that fails. ADAPTER is a name (built-in or in ``ADAPTERS_DIR``) or
the path of an adapter file being written.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from courier_gateway.config import ConfigError, Settings

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``adapters`` sub-commands."""
    commands = parser.add_subparsers(dest="adapters_command", metavar="ACTION", required=True)
    listing = commands.add_parser("list", help="list the adapters (built-in and ADAPTERS_DIR)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    check = commands.add_parser(
        "check", help="show the canonical events a payload becomes (no server needed)"
    )
    check.add_argument("adapter", help="adapter name, or the path of an adapter YAML file")
    check.add_argument("payload", type=Path, help="the request body, as the provider sends it")
    check.add_argument("--source", default="carrier", help="source name to map for (carrier)")
    check.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="a request header, to verify a captured request (repeatable)",
    )
    check.add_argument("--query", default="", help="the request's query string (a=1&b=2)")
    check.add_argument("--secret", help="a key of the source: also verify the request")
    check.add_argument(
        "--tolerance", type=int, default=None, help="timestamp tolerance, seconds (settings)"
    )


def _registry(settings: Settings) -> Any:
    from courier_gateway.adapters import AdapterError, load_registry

    try:
        return load_registry(settings.adapters_dir)
    except AdapterError as error:
        raise ConfigError(str(error)) from None


def _list(args: argparse.Namespace, settings: Settings) -> int:
    registry = _registry(settings)
    rows = [
        {
            "name": adapter.name,
            "title": adapter.title,
            "origin": adapter.origin,
            "format": adapter.document.format,
            "success": adapter.success_status,
            "handshake": sorted(adapter.handshakes),
            "unconfirmed": adapter.document.unconfirmed,
        }
        for adapter in registry
    ]
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    width = max(len(row["name"]) for row in rows)
    for row in rows:
        where = "built-in" if row["origin"].startswith("built-in") else row["origin"]
        extra = f", {len(row['unconfirmed'])} unconfirmed" if row["unconfirmed"] else ""
        sys.stdout.write(
            f"{row['name']:<{width}}  {row['success']}  {row['title']} ({where}{extra})\n"
        )
    return 0


def _adapter(args: argparse.Namespace, settings: Settings) -> Any:
    from courier_gateway.adapters import AdapterError, load_adapter_file

    registry = _registry(settings)
    path = Path(args.adapter)
    if args.adapter.endswith((".yaml", ".yml")):
        try:
            return load_adapter_file(path, registry)
        except AdapterError as error:
            raise ConfigError(str(error)) from None
    adapter = registry.get(args.adapter)
    if adapter is None:
        raise ConfigError(
            f"adapter {args.adapter!r} is not known; `courier-gateway adapters list` shows"
            " the adapters"
        )
    return adapter


def _headers(values: list[str]) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for value in values:
        name, separator, text = value.partition(":")
        if not separator or not name.strip():
            raise ConfigError(f"--header {value!r}: write NAME:VALUE")
        headers.setdefault(name.strip().lower(), []).append(text.strip())
    return headers


def _check(args: argparse.Namespace, settings: Settings) -> int:
    from courier_gateway.adapters import Inbound, PayloadError, Secret, VerificationError
    from courier_gateway.adapters.report import mapping_report

    adapter = _adapter(args, settings)
    try:
        body = args.payload.read_bytes()
    except OSError as error:
        raise ConfigError(f"{args.payload}: cannot be read ({error.strerror})") from None
    headers = _headers(args.header)
    query: dict[str, list[str]] = {}
    for name, value in parse_qsl(args.query, keep_blank_values=True):
        query.setdefault(name, []).append(value)
    document: dict[str, Any] = {"adapter": adapter.name}
    if args.secret is not None:
        request = Inbound(body, lambda n: headers.get(n, []), lambda n: query.get(n, []))
        tolerance = args.tolerance or settings.signature_tolerance_seconds
        try:
            key = adapter.verify(
                request, [Secret("cli", args.secret)], now=time.time(), tolerance=tolerance
            )
            document["verified"] = {"keyId": key}
        except VerificationError as error:
            document["verified"] = {"error": str(error), "reason": error.reason}
            sys.stdout.write(json.dumps(document, indent=2) + "\n")
            sys.stderr.write(f"courier-gateway adapters check: 401 INVALID_SIGNATURE: {error}\n")
            return 1
    try:
        mapping = adapter.map_body(
            body,
            source=args.source,
            default_source=args.source,
            headers={name: values[0] for name, values in headers.items()},
            query={name: values[0] for name, values in query.items()},
        )
    except PayloadError as error:
        sys.stderr.write(f"courier-gateway adapters check: 400 INVALID_PAYLOAD: {error}\n")
        return 1
    document.update(mapping_report(mapping))
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``adapters list`` or ``adapters check``."""
    settings = Settings.from_env()
    if args.adapters_command == "list":
        return _list(args, settings)
    return _check(args, settings)
