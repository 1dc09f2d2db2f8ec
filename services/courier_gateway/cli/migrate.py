"""``courier-gateway migrate``: bring documents written by earlier versions up to date.

Today that is one migration, into tenancy (see :mod:`courier_gateway.migrations.tenancy`). It
reads the sources (``SOURCES_FILE`` / ``SIGNING_SECRET``, as the ingress does) to know which
tenant owns a legacy document. Exit codes: 0 when everything was migrated, 1 when something was
left for a later run (an event still in flight in an old worker, a conflicting dead letter), 2
for bad settings.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from courier_gateway.config import Settings

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's options."""
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    """Run every pending migration and print what changed."""
    # Imported here: every command's parser loads this module, and `dev` must start fast.
    from courier_gateway.config import Settings, load_sources

    settings = Settings.from_env()
    settings.require("MONGO_URI")
    namespaces = {
        name: source.shipment_namespace for name, source in load_sources(settings).items()
    }
    return asyncio.run(_migrate(settings, namespaces, as_json=bool(args.json)))


async def _migrate(settings: Settings, namespaces: dict[str, str], *, as_json: bool) -> int:
    import orjson

    from courier_gateway.migrations import Ownership, migrate_to_tenancy
    from courier_gateway.store import open_store

    client = await open_store(settings)
    try:
        report = await migrate_to_tenancy(client[settings.mongo_db], Ownership(namespaces))
    finally:
        await client.close()
    summary = report.as_dict()
    if as_json:
        sys.stdout.write(orjson.dumps(summary).decode() + "\n")
    else:
        for part, counts in summary.items():
            sys.stdout.write(f"{part}: " + ", ".join(f"{k} {v}" for k, v in counts.items()) + "\n")
        if not report.complete:
            sys.stdout.write("some documents were left for a later run: run migrate again\n")
    return 0 if report.complete else 1
