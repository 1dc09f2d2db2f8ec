"""``courier-gateway events``: what happened to an event, without a database shell.

- ``show SOURCE EVENT_ID``: the event's story (see ``event_story.py``); exit 1 when there is no
  record of it. ``--key`` follows an idempotency key instead (an event answered
  ``duplicate: true`` shares its key with an earlier one); ``--wait`` waits until it is
  processed or dead-lettered.
- ``list``: ledger records, newest first, by source, status and time.

``--json`` prints documents for programs; times are RFC 3339 UTC everywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from courier_gateway.cli.parsing import UsageError, moment, positive

if TYPE_CHECKING:
    from pymongo.database import Database

    from courier_gateway.cli.event_story import KeyStory
    from courier_gateway.config import Settings
    from courier_gateway.queue.topology import SyncRedis

__all__ = ["STATUSES", "add_arguments", "open_database", "run"]

#: The ledger's statuses, as ``events list --status`` takes them.
STATUSES = ("processing", "processed", "dead_lettered")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``events show`` and ``events list``."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="the story of one event: intake to outcome")
    show.add_argument("source", metavar="SOURCE", help="the source it was posted to")
    show.add_argument("event_id", metavar="EVENT_ID", help="its eventId")
    show.add_argument(
        "--key", help="follow this idempotency key (of a copy answered `duplicate: true`)"
    )
    show.add_argument(
        "--wait",
        type=positive(float),
        metavar="SECONDS",
        help="wait up to SECONDS until it is processed or dead-lettered",
    )
    show.add_argument("--json", action="store_true", help="print it as JSON")

    listing = actions.add_parser("list", help="events, newest first")
    listing.add_argument(
        "--source", action="append", default=[], help="only this source (repeatable)"
    )
    listing.add_argument(
        "--status",
        action="append",
        default=[],
        choices=STATUSES,
        help="only this ledger status (repeatable)",
    )
    listing.add_argument("--since", type=moment, help="first taken at or after this time")
    listing.add_argument("--until", type=moment, help="first taken before this time")
    listing.add_argument("--limit", type=positive(int), default=50, help="at most this many (50)")
    listing.add_argument("--json", action="store_true", help="print them as JSON")


@contextlib.contextmanager
def open_database(settings: Settings) -> Iterator[Database[dict[str, Any]]]:
    """A read-only view of the store; ``MONGO_URI`` named when it cannot be reached."""
    from pymongo import MongoClient
    from pymongo.errors import ConnectionFailure

    from courier_gateway.config import ConfigError

    settings.require("MONGO_URI")
    timeout = settings.store_timeout_ms
    client: MongoClient[dict[str, Any]] = MongoClient(
        settings.mongo_uri,
        tz_aware=True,
        serverSelectionTimeoutMS=timeout,
        connectTimeoutMS=timeout,
        socketTimeoutMS=timeout,
    )
    try:
        yield client[settings.mongo_db]
    except ConnectionFailure as error:
        raise ConfigError(
            f"MONGO_URI: the store is not reachable ({type(error).__name__})"
        ) from None
    finally:
        client.close()


@contextlib.contextmanager
def _open_redis(settings: Settings) -> Iterator[SyncRedis | None]:
    if not settings.redis_url and not settings.redis_sentinels:
        yield None
        return
    from redis.exceptions import RedisClusterException, RedisError

    from courier_gateway.queue.topology import connect_sync

    try:
        # A cluster client connects here already: no node answering is no queue trace.
        client = connect_sync(settings, timeout=5)
    except (RedisError, RedisClusterException, OSError):
        yield None
        return
    try:
        yield client
    finally:
        client.close()


def _shipment_namespace(settings: Settings, tenant: str) -> list[str]:
    """The tenant's shipment namespace when the sources are configured here (a shared one)."""
    from courier_gateway.config import ConfigError, load_sources

    try:
        source = load_sources(settings).get(tenant)
    except ConfigError:
        return []
    return [source.shipment_namespace] if source else []


def _stories(
    database: Database[dict[str, Any]],
    redis: SyncRedis | None,
    settings: Settings,
    args: argparse.Namespace,
) -> list[KeyStory]:
    from redis.exceptions import RedisClusterException, RedisError

    from courier_gateway.cli.event_story import KeyStory
    from courier_gateway.queue.layout import QueueLayout
    from courier_gateway.queue.lookups import trace_event
    from courier_gateway.store import queries

    tenant, event_id = args.source, args.event_id
    shared = _shipment_namespace(settings, tenant)
    if args.key:
        found = queries.record_by_key(database, tenant, args.key)
        records = [found] if found else []
        keys = [args.key]
    else:
        records = queries.event_records(database, tenant, event_id)
        keys = [str(r["idempotencyKey"]) for r in records] or [f"{tenant}:{event_id}"]
    letters = queries.dead_letters_of_event(database, tenant, event_id, keys)
    stories = []
    for key in keys:
        ledger = next((r for r in records if r["idempotencyKey"] == key), None)
        letter = next((d for d in letters if d["idempotencyKey"] == key), None)
        shipment_id = (ledger or {}).get("shipmentId") or (
            ((letter or {}).get("event") or {}).get("payload", {}).get("shipmentId")
        )
        trace = None
        if redis is not None:
            with contextlib.suppress(RedisError, RedisClusterException, OSError):
                trace = trace_event(
                    redis,
                    QueueLayout.from_settings(settings),
                    tenant=tenant,
                    idempotency_key=key,
                    event_id=event_id,
                )
        namespaces = [(letter or {}).get("shipmentNamespace"), *shared, tenant]
        stories.append(
            KeyStory(
                tenant=tenant,
                event_id=event_id,
                idempotency_key=key,
                ledger=ledger,
                dead_letter=letter,
                shipment=queries.shipment(database, shipment_id, [n for n in namespaces if n])
                if shipment_id
                else None,
                queue=trace,
            )
        )
    return stories


def _show(args: argparse.Namespace, settings: Settings) -> int:
    from courier_gateway.cli.event_story import TERMINAL, outcome, render, story_json
    from courier_gateway.cli.output import print_json

    deadline = time.monotonic() + (args.wait or 0)
    with open_database(settings) as database, _open_redis(settings) as redis:
        while True:
            stories = _stories(database, redis, settings, args)
            settled = all(outcome(story) in TERMINAL for story in stories)
            if settled or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
    if args.json:
        print_json([story_json(story) for story in stories])
    else:
        sys.stdout.write(render(stories) + "\n")
    return 1 if all(outcome(story) == "unknown" for story in stories) else 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from courier_gateway.cli.output import print_json, table
    from courier_gateway.store import queries
    from courier_gateway.timestamps import rfc3339

    if args.since and args.until and args.since >= args.until:
        raise UsageError("--since must be earlier than --until")
    with open_database(settings) as database:
        records = queries.list_events(
            database,
            tenants=args.source,
            statuses=args.status,
            window=queries.Window(args.since, args.until),
            limit=args.limit,
        )
    rows = []
    for record in records:
        attempts = record.get("attempts") or []
        last = attempts[-1] if attempts else {}
        rows.append(
            {
                "createdAt": rfc3339(record.get("createdAt")),
                "source": queries.tenant_of(record),
                "eventId": record.get("eventId"),
                "idempotencyKey": record.get("idempotencyKey"),
                "status": record.get("status"),
                "attempts": len(attempts),
                "lastError": last.get("errorCode"),
                "traceId": record.get("traceId"),
            }
        )
    if args.json:
        print_json(rows)
        return 0
    listing = table(
        ("FIRST TAKEN", "SOURCE", "EVENT ID", "STATUS", "ATTEMPTS", "LAST ERROR"),
        [
            (
                row["createdAt"],
                row["source"],
                row["eventId"],
                row["status"],
                row["attempts"],
                row["lastError"] or "",
            )
            for row in rows
        ],
        empty="no event matches",
    )
    sys.stdout.write(listing + "\n")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``events show`` or ``events list``; return the exit code."""
    from courier_gateway.cli.environment import command_settings

    context = command_settings()
    with context.explained():
        if args.action == "show":
            return _show(args, context.settings)
        return _list(args, context.settings)
