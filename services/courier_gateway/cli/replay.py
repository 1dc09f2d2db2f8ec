"""``courier-gateway replay``: select dead letters, replay or discard them, print a summary.

Exit codes: 0 when nothing failed, 1 when any entry failed, 2 for a wrong command line or bad
settings. A long replay shows a progress line on the terminal (standard error).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import uuid
from typing import TYPE_CHECKING

from courier_gateway.cli.parsing import UsageError, moment, positive

if TYPE_CHECKING:
    from courier_gateway.config import Settings
    from courier_gateway.queue.topology import AsyncRedis
    from courier_gateway.worker.replay import ReplayResult, Selection

__all__ = ["add_arguments", "run"]

# A "/" lets the operator use "<namespace>/<name>" of a ReplayRequest as the id.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


def _request_id(text: str) -> str:
    if not _REQUEST_ID.match(text):
        raise argparse.ArgumentTypeError(
            "a request id is 1-128 letters, digits, '.', '_', ':', '/' or '-',"
            " starting alphanumeric"
        )
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``replay`` options."""
    select = parser.add_argument_group("selection (pending dead letters matching all given)")
    select.add_argument("--event-id", action="append", default=[], help="an event id (repeatable)")
    select.add_argument("--reason", action="append", default=[], help="a reason code (repeatable)")
    select.add_argument("--source", action="append", default=[], help="a source (repeatable)")
    select.add_argument("--since", type=moment, help="dead-lettered at or after this time")
    select.add_argument("--until", type=moment, help="dead-lettered before this time")
    select.add_argument(
        "--all", action="store_true", help="every pending dead letter (alone: no other criterion)"
    )
    parser.add_argument("--limit", type=positive(int), default=100, help="at most this many (100)")
    parser.add_argument("--rate", type=positive(float), default=50.0, help="events per second (50)")
    parser.add_argument("--request-id", type=_request_id, help="makes the replay idempotent")
    parser.add_argument(
        "--dry-run", action="store_true", help="list what would happen, change nothing"
    )
    parser.add_argument("--discard", action="store_true", help="mark the entries discarded instead")
    parser.add_argument(
        "--adapter",
        help="re-map UNMAPPED entries with this adapter instead of the one they came through",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def _selection(args: argparse.Namespace) -> Selection:
    from courier_gateway.worker.replay import Selection

    criteria = {
        "--event-id": args.event_id,
        "--reason": args.reason,
        "--source": args.source,
        "--since": args.since,
        "--until": args.until,
    }
    given = [option for option, value in criteria.items() if value]
    if args.all and given:
        raise UsageError(
            f"--all selects every pending dead letter; it cannot be combined with {given[0]}"
        )
    if not given and not args.all:
        raise UsageError(
            "choose what to replay with --event-id, --reason, --source, --since/--until, or --all"
        )
    if args.since and args.until and args.since >= args.until:
        raise UsageError("--since must be earlier than --until")
    return Selection(
        event_ids=tuple(args.event_id),
        reasons=tuple(args.reason),
        sources=tuple(args.source),
        since=args.since,
        until=args.until,
        limit=args.limit,
    )


def _table(result: ReplayResult) -> str:
    from courier_gateway.cli.output import table

    rows = [
        (
            entry["eventId"],
            entry["source"],
            entry["reasonCode"],
            entry["deadLetteredAt"],
            entry.get("result", ""),
        )
        for entry in result.entries
    ]
    listing = table(
        ("EVENT ID", "SOURCE", "REASON", "DEAD-LETTERED", "RESULT"),
        rows,
        empty="no pending dead letter matches",
    )
    mode = " (dry run)" if result.dry_run else ""
    return (
        f"{listing}\n\n{result.action}{mode} {result.request_id}: matched {result.matched},"
        f" replayed {result.replayed}, discarded {result.discarded},"
        f" skipped {result.skipped}, failed {result.failed}"
    )


async def _record_summary(redis: AsyncRedis, stream: str, result: ReplayResult) -> None:
    """Leave the counts where the operator reads them for the ReplayRequest status.

    Kept a week: long enough for any operator restart, short enough not to pile up.
    """
    import orjson

    from courier_gateway.queue.state import replay_summary_key

    summary = {key: value for key, value in result.as_dict().items() if key != "entries"}
    key = replay_summary_key(stream, result.request_id)
    await redis.set(key, orjson.dumps(summary), ex=7 * 86400)


async def _run(args: argparse.Namespace, settings: Settings) -> ReplayResult:
    # Imported here: the command line is parsed by every role, and the ingress must not load
    # prometheus-client before it has chosen its multiprocess directory.
    from courier_gateway.cli.progress import Progress
    from courier_gateway.config.sources import load_adapters
    from courier_gateway.queue.layout import QueueLayout
    from courier_gateway.queue.topology import connect
    from courier_gateway.store import DeadLetterEvent, open_store
    from courier_gateway.worker.replay import replay

    selection = _selection(args)
    settings.require_redis()
    settings.require("MONGO_URI")
    store = await open_store(settings)
    redis = connect(settings, timeout=5)
    try:
        letters = DeadLetterEvent.get_pymongo_collection()
        expected = min(await letters.count_documents(selection.query()), selection.limit)
        verb = "discarding" if args.discard else "replaying"
        with Progress(f"{verb} dead letters", total=expected) as progress:
            result = await replay(
                redis=redis,
                layout=QueueLayout.from_settings(settings),
                min_replicas=settings.enqueue_min_replicas,
                selection=selection,
                request_id=args.request_id or f"replay-{uuid.uuid4().hex[:12]}",
                rate=args.rate,
                dry_run=args.dry_run,
                discard=args.discard,
                on_entry=lambda entry: progress.advance(),
                adapters=load_adapters(settings),
                adapter_override=args.adapter,
            )
        if args.request_id:
            await _record_summary(redis, settings.queue_stream, result)
        return result
    finally:
        await redis.aclose()
        await store.close()


def run(args: argparse.Namespace) -> int:
    """Run the replay and print its summary; return the exit code."""
    import orjson

    from courier_gateway.cli.environment import command_settings

    _selection(args)  # a wrong command line is refused before anything connects
    context = command_settings()
    with context.explained():
        result = asyncio.run(_run(args, context.settings))
    if args.json:
        sys.stdout.write(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(_table(result) + "\n")
    return 1 if result.failed else 0
