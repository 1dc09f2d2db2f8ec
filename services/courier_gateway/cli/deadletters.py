"""``courier-gateway deadletters``: what could not be processed, and why, without a database shell.

- ``stats``: counts by reason, by source and by age (the first question of an incident);
- ``list``: the dead letters themselves, oldest first (the order ``replay`` takes them in);
- ``show SOURCE EVENT_ID``: one dead letter whole: reason, every attempt, replays, the event.

Each reads pending dead letters unless ``--status`` says otherwise; ``--json`` prints documents
for programs. Replaying or discarding them stays with ``courier-gateway replay``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from courier_gateway.cli.attempts import attempt_json
from courier_gateway.cli.parsing import UsageError, moment, positive

__all__ = ["AGE_BUCKETS", "add_arguments", "run"]

_STATUSES = ("pending", "replayed", "discarded", "all")
#: Age buckets of ``stats``: an upper bound and its label (the last one is open-ended).
AGE_BUCKETS: tuple[tuple[timedelta | None, str], ...] = (
    (timedelta(hours=1), "under 1 hour"),
    (timedelta(days=1), "1 to 24 hours"),
    (timedelta(days=7), "1 to 7 days"),
    (None, "over 7 days"),
)


def _status_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--status",
        choices=_STATUSES,
        default="pending",
        help="review status to read (pending; all: every one)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``deadletters stats``, ``list`` and ``show``."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    stats = actions.add_parser("stats", help="counts by reason, source and age")
    _status_option(stats)
    stats.add_argument("--source", action="append", default=[], help="only this source")
    stats.add_argument("--json", action="store_true", help="print them as JSON")

    listing = actions.add_parser("list", help="dead letters, oldest first")
    _status_option(listing)
    listing.add_argument("--reason", action="append", default=[], help="only this reason code")
    listing.add_argument("--source", action="append", default=[], help="only this source")
    listing.add_argument("--since", type=moment, help="dead-lettered at or after this time")
    listing.add_argument("--until", type=moment, help="dead-lettered before this time")
    listing.add_argument("--limit", type=positive(int), default=50, help="at most this many (50)")
    listing.add_argument("--json", action="store_true", help="print them as JSON")

    show = actions.add_parser("show", help="one dead letter: reason, attempts, replays, event")
    show.add_argument("source", metavar="SOURCE", help="the source it was posted to")
    show.add_argument("event_id", metavar="EVENT_ID", help="its eventId")
    show.add_argument("--json", action="store_true", help="print it as JSON")


def _statuses(status: str) -> list[str]:
    return [] if status == "all" else [status]


def _age_label(age: timedelta) -> str:
    for bound, label in AGE_BUCKETS:
        if bound is None or age < bound:
            return label
    return AGE_BUCKETS[-1][1]


def _stats(database: Any, args: argparse.Namespace) -> int:
    from courier_gateway.cli.output import print_json, table
    from courier_gateway.store import queries
    from courier_gateway.timestamps import as_utc, rfc3339

    reasons: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    ages: Counter[str] = Counter()
    moments: list[datetime] = []
    now = datetime.now(UTC)
    for letter in queries.dead_letters(
        database,
        statuses=_statuses(args.status),
        tenants=args.source,
        projection=("reasonCode", "source", "deadLetteredAt"),
    ):
        reasons[str(letter.get("reasonCode"))] += 1
        sources[queries.tenant_of(letter)] += 1
        try:
            moment_ = as_utc(letter.get("deadLetteredAt"))
        except ValueError:
            continue
        moments.append(moment_)
        ages[_age_label(now - moment_)] += 1
    total = sum(reasons.values())
    document = {
        "status": args.status,
        "total": total,
        "oldest": rfc3339(min(moments)) if moments else None,
        "newest": rfc3339(max(moments)) if moments else None,
        "byReason": dict(reasons.most_common()),
        "bySource": dict(sources.most_common()),
        "byAge": {label: ages[label] for _, label in AGE_BUCKETS},
    }
    if args.json:
        print_json(document)
        return 0
    kind = "dead letters" if args.status == "all" else f"{args.status} dead letters"
    if total == 0:
        sys.stdout.write(f"No {kind}.\n")
        return 0
    parts = [
        f"{total} {kind} (oldest {document['oldest']}, newest {document['newest']})",
        table(("REASON", "COUNT"), reasons.most_common(), empty=""),
        table(("SOURCE", "COUNT"), sources.most_common(), empty=""),
        table(("AGE", "COUNT"), list(document["byAge"].items()), empty=""),
    ]
    sys.stdout.write("\n\n".join(parts) + "\n")
    return 0


def _summary(letter: dict[str, Any]) -> dict[str, Any]:
    from courier_gateway.store.queries import tenant_of
    from courier_gateway.timestamps import rfc3339

    return {
        "deadLetteredAt": rfc3339(letter.get("deadLetteredAt")),
        "source": tenant_of(letter),
        "eventId": letter.get("eventId"),
        "idempotencyKey": letter.get("idempotencyKey"),
        "reasonCode": letter.get("reasonCode"),
        "reasonMessage": letter.get("reasonMessage"),
        "reviewStatus": letter.get("reviewStatus"),
        "deadLetterCount": letter.get("deadLetterCount", 1),
        "attempts": len(letter.get("attempts") or []),
        "traceId": letter.get("traceId"),
    }


def _list(database: Any, args: argparse.Namespace) -> int:
    from courier_gateway.cli.output import print_json, table
    from courier_gateway.store import queries

    if args.since and args.until and args.since >= args.until:
        raise UsageError("--since must be earlier than --until")
    found = []
    for letter in queries.dead_letters(
        database,
        statuses=_statuses(args.status),
        tenants=args.source,
        reasons=args.reason,
        window=queries.Window(args.since, args.until),
    ):
        found.append(_summary(letter))
        if len(found) >= args.limit:
            break
    if args.json:
        print_json(found)
        return 0
    rows = [
        (
            entry["deadLetteredAt"],
            entry["source"],
            entry["eventId"],
            entry["reasonCode"],
            entry["reviewStatus"],
            entry["deadLetterCount"],
            entry["attempts"],
        )
        for entry in found
    ]
    headers = ("DEAD-LETTERED", "SOURCE", "EVENT ID", "REASON", "STATUS", "TIMES", "ATTEMPTS")
    sys.stdout.write(table(headers, rows, empty="no dead letter matches") + "\n")
    return 0


def _full(letter: dict[str, Any]) -> dict[str, Any]:
    from courier_gateway.timestamps import rfc3339

    return {
        **_summary(letter),
        "receivedAt": rfc3339(letter.get("receivedAt")),
        "keyId": letter.get("keyId"),
        "attempts": [attempt_json(a) for a in letter.get("attempts") or []],
        "replays": [
            {"requestId": r.get("requestId"), "at": rfc3339(r.get("at")), "by": r.get("by")}
            for r in letter.get("replays") or []
        ],
        "event": letter.get("event"),
    }


def _render_full(letter: dict[str, Any]) -> str:
    import orjson

    from courier_gateway.cli.output import table

    lines = [
        f"{letter['source']} {letter['eventId']}: {letter['reasonCode']}"
        f" ({letter['reviewStatus']}): {letter['reasonMessage']}",
        f"  idempotency key  {letter['idempotencyKey']}",
        f"  trace id         {letter['traceId']}",
        f"  received         {letter['receivedAt']}"
        + (f" (signing key {letter['keyId']})" if letter["keyId"] else ""),
        f"  dead-lettered    {letter['deadLetteredAt']} ({letter['deadLetterCount']} time"
        f"{'s' if letter['deadLetterCount'] != 1 else ''})",
        "  attempts",
    ]
    rows = [
        (
            a["number"],
            a["round"],
            a["startedAt"],
            a["worker"],
            a["outcome"],
            f"{a['errorCode']}: {a['errorMessage']}" if a["errorCode"] else "",
        )
        for a in letter["attempts"]
    ]
    listing = table(("#", "ROUND", "STARTED", "WORKER", "OUTCOME", "ERROR"), rows, empty="none")
    lines += [f"    {row}" for row in listing.splitlines()]
    replays = ", ".join(f"{r['requestId']} at {r['at']} by {r['by']}" for r in letter["replays"])
    lines.append(f"  replays          {replays or 'none'}")
    event = orjson.dumps(letter["event"], option=orjson.OPT_INDENT_2).decode()
    lines.append("  event")
    lines += [f"    {row}" for row in event.splitlines()]
    return "\n".join(lines)


def _show(database: Any, args: argparse.Namespace) -> int:
    from courier_gateway.cli.output import print_json
    from courier_gateway.store import queries

    letters = [_full(letter) for letter in queries.dead_letters_of_event(
        database, args.source, args.event_id
    )]  # fmt: skip
    if args.json:
        print_json(letters)
    elif letters:
        sys.stdout.write("\n\n".join(_render_full(letter) for letter in letters) + "\n")
    else:
        sys.stdout.write(
            f"{args.source} {args.event_id}: no dead letter"
            f" (courier-gateway events show {args.source} {args.event_id} tells what happened)\n"
        )
    return 0 if letters else 1


def run(args: argparse.Namespace) -> int:
    """Run ``deadletters stats``, ``list`` or ``show``; return the exit code."""
    from courier_gateway.cli.environment import command_settings
    from courier_gateway.cli.events import open_database

    context = command_settings()
    actions = {"stats": _stats, "list": _list, "show": _show}
    with context.explained(), open_database(context.settings) as database:
        return actions[args.action](database, args)
