"""What happened to one event, told from the records it left: ``courier-gateway events show``.

An event is followed through every place it leaves a trace: the queue (the duplicate hint and
stream entry written with the enqueue, a retry waiting in the schedule), the ledger (its status,
lease and every attempt), the shipment it changed (or did not), and its dead letter. The
outcome names what an on-call operator asks first (processed, retrying, dead-lettered,
queued, a duplicate of another event, unknown), and the next step when there is one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from courier_gateway.cli.attempts import attempt_json
from courier_gateway.queue.lookups import QueueTrace
from courier_gateway.tenancy import scoped
from courier_gateway.timestamps import rfc3339
from courier_gateway.worker.shipments import history_key

__all__ = ["TERMINAL", "KeyStory", "outcome", "render", "story_json"]

Document = dict[str, Any]
#: Outcomes after which nothing more happens to the event by itself.
TERMINAL = frozenset({"processed", "dead_lettered", "duplicate"})


@dataclass(frozen=True, slots=True)
class KeyStory:
    """The records of one idempotency key of the event asked about."""

    tenant: str
    event_id: str
    idempotency_key: str
    ledger: Document | None
    dead_letter: Document | None
    shipment: Document | None
    queue: QueueTrace | None


def _history_key(story: KeyStory) -> str:
    """Where the event sits in its shipment's history: a digest of its scoped ledger id."""
    return history_key(scoped(story.tenant, story.idempotency_key))


def _attempts(story: KeyStory) -> list[Document]:
    for record in (story.ledger, story.dead_letter):
        if record and record.get("attempts"):
            return list(record["attempts"])
    return []


def _lease_live(ledger: Document) -> bool:
    return int(ledger.get("leaseUntilMs") or 0) > time.time() * 1000


def outcome(story: KeyStory) -> str:
    """``processed``, ``retrying``, ``processing``, ``dead_lettered``, ``queued``,
    ``duplicate`` (the key belongs to another event) or ``unknown``."""
    ledger = story.ledger
    if ledger is None:
        return _outcome_without_ledger(story)
    if ledger.get("eventId") != story.event_id:
        return "duplicate"
    status = str(ledger.get("status"))
    if status in ("processed", "dead_lettered"):
        return status
    attempts = _attempts(story)
    if not _lease_live(ledger) and attempts and attempts[-1].get("outcome") == "retry":
        return "retrying"
    return "processing"


def _outcome_without_ledger(story: KeyStory) -> str:
    if story.dead_letter is not None:
        return "dead_lettered"  # the ledger's record expired first (30 days against 90)
    if story.queue is not None and (story.queue.on_stream or story.queue.retry_due_at):
        return "queued"
    return "unknown"


def _failures(attempts: Sequence[Document]) -> str:
    codes = [str(a.get("errorCode")) for a in attempts if a.get("outcome") != "processed"]
    unique = sorted(set(codes), key=codes.index)
    return ", ".join(unique)


def _processed(story: KeyStory) -> str:
    attempts = _attempts(story)
    count = len(attempts)
    replayed = any(int(a.get("round", 1)) > 1 for a in attempts)
    text = (
        "processed on the first attempt"
        if count <= 1
        else f"processed on attempt {count}, after {count - 1} failed ({_failures(attempts)})"
    )
    return text + (", after a replay" if replayed else "")


def _retrying(story: KeyStory) -> str:
    attempts = _attempts(story)
    due = story.queue.retry_due_at if story.queue else None
    when = f"; the next attempt is due at {rfc3339(due)}" if due else ""
    return f"retrying: attempt {len(attempts)} failed with {attempts[-1].get('errorCode')}{when}"


def _processing(story: KeyStory) -> str:
    owner = story.ledger.get("leaseOwner") if story.ledger else None
    return f"being processed by {owner}" if owner else "waiting for a worker to take it again"


def _dead_lettered(story: KeyStory) -> str:
    letter = story.dead_letter or {}
    return f"dead-lettered: {letter.get('reasonCode', '?')} ({letter.get('reasonMessage', '')})"


def _duplicate(story: KeyStory) -> str:
    first = story.ledger or {}
    return (
        f"a duplicate: its idempotency key was first used by event {first.get('eventId')},"
        f" which is {first.get('status')}; this one was not processed again"
    )


def _queued(story: KeyStory) -> str:
    return "accepted and queued; no worker has finished it yet"


_SUMMARIES: dict[str, Callable[[KeyStory], str]] = {
    "processed": _processed,
    "retrying": _retrying,
    "processing": _processing,
    "dead_lettered": _dead_lettered,
    "duplicate": _duplicate,
    "queued": _queued,
}


def _summary(story: KeyStory, result: str) -> str:
    describe = _SUMMARIES.get(result)
    return describe(story) if describe else "unknown: no record of this event"


def _shipment_effect(story: KeyStory, result: str) -> Document | None:
    ledger = story.ledger or {}
    shipment_id = ledger.get("shipmentId") or (
        ((story.dead_letter or {}).get("event") or {}).get("payload", {}).get("shipmentId")
    )
    if not shipment_id:
        return None
    effect: Document = {"shipmentId": shipment_id, "effect": "none"}
    document = story.shipment
    if document is None:
        return effect
    effect.update(
        status=document.get("status"),
        lastEventId=document.get("lastEventId"),
        updatedAt=rfc3339(document["updatedAt"]) if document.get("updatedAt") else None,
    )
    entry = (document.get("history") or {}).get(_history_key(story))
    if entry is not None:
        current = document.get("lastEventId") == entry.get("eventId")
        effect["effect"] = "current" if current else "history"
        effect["appliedStatus"] = entry.get("status")
        effect["receivedAt"] = rfc3339(entry.get("receivedAt"))
    return effect


def _intake(story: KeyStory) -> Document:
    letter = story.dead_letter or {}
    shipment_entry = ((story.shipment or {}).get("history") or {}).get(_history_key(story)) or {}
    received = letter.get("receivedAt") or shipment_entry.get("receivedAt")
    intake: Document = {
        "receivedAt": rfc3339(received) if received else None,
        "keyId": letter.get("keyId"),
    }
    queue = story.queue
    if queue is not None:
        intake.update(
            streamEntry=queue.entry_id,
            queuedAt=rfc3339(queue.queued_at) if queue.queued_at else None,
            onStream=queue.on_stream,
            duplicateHintSeconds=queue.hint_expires_in,
        )
    return intake


def _dead_letter_json(letter: Document | None) -> Document | None:
    if letter is None:
        return None
    return {
        "reasonCode": letter.get("reasonCode"),
        "reasonMessage": letter.get("reasonMessage"),
        "reviewStatus": letter.get("reviewStatus"),
        "deadLetteredAt": rfc3339(letter.get("deadLetteredAt")),
        "deadLetterCount": letter.get("deadLetterCount", 1),
        "replays": [
            {"requestId": r.get("requestId"), "at": rfc3339(r.get("at")), "by": r.get("by")}
            for r in letter.get("replays") or []
        ],
    }


def _next_step(story: KeyStory, result: str) -> str | None:
    if result == "dead_lettered" and (story.dead_letter or {}).get("reviewStatus") == "pending":
        return (
            "fix the cause, then: courier-gateway replay"
            f" --source {story.tenant} --event-id {story.event_id}"
        )
    if result == "unknown":
        return (
            "a request refused at intake (4xx) leaves no record; one answered `duplicate: true`"
            " shares the idempotency key of an earlier event: courier-gateway events show"
            f" {story.tenant} {story.event_id} --key IDEMPOTENCY_KEY"
        )
    return None


def story_json(story: KeyStory) -> Document:
    """The story of one key as a JSON document."""
    result = outcome(story)
    ledger = story.ledger
    return {
        "source": story.tenant,
        "eventId": story.event_id,
        "idempotencyKey": story.idempotency_key,
        "outcome": result,
        "summary": _summary(story, result),
        "traceId": (ledger or story.dead_letter or {}).get("traceId"),
        "intake": _intake(story),
        "ledger": None
        if ledger is None
        else {
            "eventId": ledger.get("eventId"),
            "status": ledger.get("status"),
            "createdAt": rfc3339(ledger.get("createdAt")),
            "processedAt": rfc3339(ledger["processedAt"]) if ledger.get("processedAt") else None,
            "leaseOwner": ledger.get("leaseOwner"),
        },
        "attempts": [attempt_json(a) for a in _attempts(story)],
        "nextRetryAt": rfc3339(story.queue.retry_due_at)
        if story.queue and story.queue.retry_due_at
        else None,
        "shipment": _shipment_effect(story, result),
        "deadLetter": _dead_letter_json(story.dead_letter),
        "nextStep": _next_step(story, result),
    }


def _effect_line(effect: Document | None, result: str) -> str:
    if effect is None:
        return "none"
    shipment_id = effect["shipmentId"]
    if effect["effect"] == "current":
        return f"{shipment_id} is {effect['status']!r}, from this event"
    if effect["effect"] == "history":
        return (
            f"{shipment_id}: joined its history as an older event ({effect['appliedStatus']!r});"
            f" it is {effect['status']!r} from the later event {effect['lastEventId']}"
        )
    if effect.get("status") is not None:
        return f"{shipment_id}: not changed by this event (it is {effect['status']!r})"
    return f"{shipment_id}: not changed by this event"


def _intake_line(intake: Document) -> str:
    parts = []
    if intake.get("receivedAt"):
        key = f" (signing key {intake['keyId']})" if intake.get("keyId") else ""
        parts.append(f"received {intake['receivedAt']}{key}")
    if intake.get("streamEntry"):
        where = "still on the stream" if intake.get("onStream") else "since trimmed"
        parts.append(
            f"queued {intake['queuedAt']} as stream entry {intake['streamEntry']} ({where})"
        )
    return "; ".join(parts) or "no trace left (older than the duplicate hint)"


def _duplicates_line(intake: Document) -> str:
    seconds = intake.get("duplicateHintSeconds")
    hint = (
        f"intake answers them `duplicate: true` for another {seconds} s, then the ledger skips them"
        if seconds is not None
        else "the ledger skips them"
    )
    return f"copies sent again with this idempotency key are not applied again ({hint})"


def _attempt_lines(attempts: list[Document]) -> list[str]:
    from courier_gateway.cli.output import table

    rows = [
        (
            a["number"],
            a["round"],
            a["startedAt"],
            a["worker"],
            a["outcome"],
            f"{a['errorCode']}: {a['errorMessage']}" if a["errorCode"] else "",
        )
        for a in attempts
    ]
    listing = table(("#", "ROUND", "STARTED", "WORKER", "OUTCOME", "ERROR"), rows, empty="")
    return [f"    {row}" for row in listing.splitlines()]


def _dead_letter_line(letter: Document) -> str:
    replays = ", ".join(f"{r['requestId']} at {r['at']}" for r in letter["replays"])
    times = letter["deadLetterCount"]
    return (
        f"{letter['reasonCode']}, {letter['reviewStatus']}, dead-lettered"
        f" {letter['deadLetteredAt']} ({times} time{'s' if times != 1 else ''})"
        + (f"; replayed: {replays}" if replays else "")
    )


def _render_one(story: KeyStory) -> str:
    document = story_json(story)
    result = document["outcome"]
    fields: list[tuple[str, object]] = [("idempotency key", story.idempotency_key)]
    if document["traceId"]:
        fields.append(("trace id", f"{document['traceId']} (in every log line of this event)"))
    if result != "unknown":
        fields.append(("intake", _intake_line(document["intake"])))
    ledger = document["ledger"]
    if ledger is not None:
        processed = f", processed {ledger['processedAt']}" if ledger["processedAt"] else ""
        fields.append(
            ("ledger", f"{ledger['status']}, first taken {ledger['createdAt']}{processed}")
        )
    lines = [f"{story.tenant} {story.event_id}: {document['summary']}"]
    lines += [f"  {name:<17}{value}" for name, value in fields]
    if document["attempts"]:
        lines.append("  attempts")
        lines += _attempt_lines(document["attempts"])
    more: list[tuple[str, object]] = []
    if document["nextRetryAt"]:
        more.append(("next attempt", document["nextRetryAt"]))
    if result != "unknown":
        more.append(("shipment", _effect_line(document["shipment"], result)))
    if document["deadLetter"] is not None:
        more.append(("dead letter", _dead_letter_line(document["deadLetter"])))
    if result in ("processed", "duplicate"):
        more.append(("duplicates", _duplicates_line(document["intake"])))
    if document["nextStep"]:
        more.append(("next step", document["nextStep"]))
    lines += [f"  {name:<17}{value}" for name, value in more]
    return "\n".join(lines)


def render(stories: Sequence[KeyStory]) -> str:
    """The stories as text for a terminal."""
    return "\n\n".join(_render_one(story) for story in stories)
