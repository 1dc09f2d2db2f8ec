"""``courier-gateway replay`` through real processes: ingress, worker, Redis, store, downstream.

Proved here, with the replay command run as a real subprocess:

- dead letters selected by ``--reason`` are re-enqueued and processed once the downstream is
  fixed; they are marked ``replayed`` with the request id, the attempt history keeps the earlier
  attempts, and dead letters with another reason stay pending;
- running the same ``--request-id`` again replays nothing and enqueues nothing;
- a replayed event that fails again re-opens its one dead letter (pending, ``deadLetterCount``
  2); the same request id then skips it and a new request id replays it;
- ``--dry-run`` lists the entries and changes nothing; ``--discard`` marks an entry discarded;
- bad arguments (``--all`` with another criterion too) end with one ``usage error`` line and
  missing settings with one ``configuration error`` line, exit code 2, no traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import StartGateway
from tests.support.downstream import Downstream, Received
from tests.support.servers import RedisServer, StoreServer, wait_for
from tests.support.signing import event
from tests.support.stack import StackEnv, post_events

UNAVAILABLE = (503, {})
OK = (200, {})


def failing(request: Received, count: int) -> tuple[int, dict[str, str]]:
    return UNAVAILABLE


def healthy(request: Received, count: int) -> tuple[int, dict[str, str]]:
    return OK


@pytest.fixture
def downstream() -> Iterator[Downstream]:
    server = Downstream(respond=failing).start()
    try:
        yield server
    finally:
        server.stop()


def replay_stack(
    redis_server: RedisServer, store_server: StoreServer, downstream: Downstream
) -> StackEnv:
    """Two attempts 100 ms apart, a breaker that never opens, and no stream trimming."""
    return StackEnv.create(
        redis_server,
        store_server,
        **downstream.env(),
        RETRY_MAX_ATTEMPTS="2",
        RETRY_BASE_DELAY_MS="100",
        RETRY_JITTER="0",
        BREAKER_FAILURE_THRESHOLD="1000",
        STREAM_TRIM_INTERVAL_SECONDS="3600",
    )


def run_replay(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``courier-gateway replay ARGS`` with exactly ``env`` (plus PATH)."""
    return subprocess.run(
        [sys.executable, "-m", "courier_gateway", "replay", *args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def replay_json(env: dict[str, str], *args: str) -> dict[str, Any]:
    """Run a replay with ``--json``; it must succeed; return the summary."""
    result = run_replay(env, *args, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    summary: dict[str, Any] = json.loads(result.stdout)
    return summary


def stream_length(stack: StackEnv) -> int:
    return stack.stream_length()


def letters_by_event(stack: StackEnv) -> dict[str, dict[str, Any]]:
    return {letter["eventId"]: letter for letter in stack.find("dead_letter_events")}


def test_replay_by_reason_processes_the_events_and_a_rerun_replays_nothing(
    start: StartGateway,
    redis_server: RedisServer,
    store_server: StoreServer,
    downstream: Downstream,
) -> None:
    stack = replay_stack(redis_server, store_server, downstream)
    start("ingress", stack.env)
    start("worker", stack.env, wait_ready=False)
    exhausted = [event() for _ in range(6)]
    unknown = [event(eventType="shipment.teleported") for _ in range(2)]
    responses = post_events(stack.url, exhausted + unknown)
    assert [r.status_code for r in responses] == [202] * 8
    assert stack.wait_terminal(8, timeout=20)
    letters = letters_by_event(stack)
    for document in unknown:
        assert letters[document["eventId"]]["reasonCode"] == "UNKNOWN_EVENT_TYPE"
    for document in exhausted:
        letter = letters[document["eventId"]]
        assert letter["reasonCode"] == "RETRIES_EXHAUSTED"
        assert letter["reviewStatus"] == "pending"
        assert [a["outcome"] for a in letter["attempts"]] == ["retry", "dead_lettered"]

    downstream.respond = healthy
    summary = replay_json(
        stack.env, "--reason", "RETRIES_EXHAUSTED", "--request-id", "r1", "--rate", "100"
    )
    assert summary["requestId"] == "r1" and summary["action"] == "replay"
    assert summary["dryRun"] is False
    assert (summary["matched"], summary["replayed"], summary["skipped"], summary["failed"]) == (
        6,
        6,
        0,
        0,
    )
    assert {entry["eventId"] for entry in summary["entries"]} == {e["eventId"] for e in exhausted}
    assert {entry["result"] for entry in summary["entries"]} == {"replayed"}

    ids = [document["eventId"] for document in exhausted]

    def ledger() -> dict[str, str]:
        return {r["eventId"]: r["status"] for r in stack.find("processed_events")}

    assert wait_for(
        lambda: [ledger()[i] for i in ids] == ["processed"] * 6, timeout=15, interval=0.2
    ), f"ledger after the replay: {ledger()}"
    # The replay touched only the replayed keys: the other reason's records stay dead-lettered.
    assert [ledger()[d["eventId"]] for d in unknown] == ["dead_lettered"] * 2
    for record in stack.find("processed_events", {"eventId": {"$in": ids}}):
        assert [a["outcome"] for a in record["attempts"]] == ["retry", "dead_lettered", "processed"]
        assert [a["number"] for a in record["attempts"]] == [1, 2, 3]
        assert [a["round"] for a in record["attempts"]] == [1, 1, 2]
    letters = letters_by_event(stack)
    for event_id in ids:
        letter = letters[event_id]
        assert letter["reviewStatus"] == "replayed"
        assert [r["requestId"] for r in letter["replays"]] == ["r1"]
        assert [a["outcome"] for a in letter["attempts"]] == ["retry", "dead_lettered"]
        assert letter["deadLetterCount"] == 1
    for document in unknown:
        letter = letters[document["eventId"]]
        assert letter["reviewStatus"] == "pending" and letter["replays"] == []
    # Each event reached the downstream twice (failed) and then once more (delivered).
    assert {f"courier:{i}": 3 for i in ids}.items() <= downstream.keys().items()
    assert stack.count("active_shipments") == 6

    # The same request again: nothing is pending under that reason any more, nothing is enqueued.
    before = stream_length(stack)
    again = replay_json(stack.env, "--reason", "RETRIES_EXHAUSTED", "--request-id", "r1")
    assert (again["replayed"], again["failed"]) == (0, 0)
    assert stream_length(stack) == before
    assert all(
        [r["requestId"] for r in letters_by_event(stack)[i]["replays"]] == ["r1"] for i in ids
    )


def test_a_replay_that_fails_again_reopens_the_same_dead_letter(
    start: StartGateway,
    redis_server: RedisServer,
    store_server: StoreServer,
    downstream: Downstream,
) -> None:
    stack = replay_stack(redis_server, store_server, downstream)
    start("ingress", stack.env)
    start("worker", stack.env, wait_ready=False)
    document = event()
    key = f"courier:{document['eventId']}"
    post_events(stack.url, [document])
    assert stack.wait_terminal(1, timeout=20)

    first = replay_json(stack.env, "--event-id", document["eventId"], "--request-id", "r1")
    assert (first["matched"], first["replayed"]) == (1, 1)

    def reopened() -> bool:
        [letter] = stack.find("dead_letter_events", {"idempotencyKey": key})
        [record] = stack.find("processed_events", {"idempotencyKey": key})
        return (
            letter["reviewStatus"] == "pending"
            and letter["deadLetterCount"] == 2
            and record["status"] == "dead_lettered"
        )

    assert wait_for(reopened, timeout=20, interval=0.2)
    assert stack.count("dead_letter_events", {"idempotencyKey": key}) == 1
    [letter] = stack.find("dead_letter_events", {"idempotencyKey": key})
    assert letter["reasonCode"] == "RETRIES_EXHAUSTED"
    assert [(a["round"], a["outcome"]) for a in letter["attempts"]] == [
        (1, "retry"),
        (1, "dead_lettered"),
        (2, "retry"),
        (2, "dead_lettered"),
    ]
    assert [r["requestId"] for r in letter["replays"]] == ["r1"]

    # Re-running request r1 skips the entry it already replayed, and enqueues nothing.
    before = stream_length(stack)
    rerun = replay_json(stack.env, "--event-id", document["eventId"], "--request-id", "r1")
    assert (rerun["matched"], rerun["replayed"], rerun["skipped"]) == (1, 0, 1)
    assert rerun["entries"][0]["result"].startswith("skipped")
    assert stream_length(stack) == before
    assert stack.find("dead_letter_events", {"idempotencyKey": key})[0]["reviewStatus"] == "pending"

    # A new request replays it; with the downstream fixed it is processed.
    downstream.respond = healthy
    second = replay_json(stack.env, "--event-id", document["eventId"], "--request-id", "r2")
    assert (second["matched"], second["replayed"], second["skipped"]) == (1, 1, 0)
    assert stream_length(stack) == before + 1
    assert wait_for(
        lambda: (
            stack.count("processed_events", {"idempotencyKey": key, "status": "processed"}) == 1
        ),
        timeout=20,
        interval=0.2,
    )
    [record] = stack.find("processed_events", {"idempotencyKey": key})
    assert [(a["round"], a["outcome"]) for a in record["attempts"]] == [
        (1, "retry"),
        (1, "dead_lettered"),
        (2, "retry"),
        (2, "dead_lettered"),
        (3, "processed"),
    ]
    [letter] = stack.find("dead_letter_events", {"idempotencyKey": key})
    assert letter["reviewStatus"] == "replayed" and letter["deadLetterCount"] == 2
    assert [r["requestId"] for r in letter["replays"]] == ["r1", "r2"]
    assert downstream.keys()[key] == 5


def test_dry_run_changes_nothing_and_discard_marks_the_entry(
    start: StartGateway, redis_server: RedisServer, store_server: StoreServer
) -> None:
    stack = StackEnv.create(redis_server, store_server, STREAM_TRIM_INTERVAL_SECONDS="3600")
    start("ingress", stack.env)
    start("worker", stack.env, wait_ready=False)
    documents = [event(eventType="shipment.teleported") for _ in range(3)]
    post_events(stack.url, documents)
    assert stack.wait_terminal(3, timeout=20)
    ids = [document["eventId"] for document in documents]
    before = stream_length(stack)
    letters_before = letters_by_event(stack)
    assert {letter["reviewStatus"] for letter in letters_before.values()} == {"pending"}

    table = run_replay(stack.env, "--reason", "UNKNOWN_EVENT_TYPE", "--dry-run")
    assert table.returncode == 0, table.stdout + table.stderr
    for event_id in ids:
        [line] = [line for line in table.stdout.splitlines() if event_id in line]
        assert "UNKNOWN_EVENT_TYPE" in line and "would be replayed" in line
    assert "(dry run)" in table.stdout and "matched 3, replayed 0" in table.stdout

    summary = replay_json(stack.env, "--all", "--dry-run", "--request-id", "dry")
    assert summary["dryRun"] is True
    assert (summary["matched"], summary["replayed"], summary["discarded"]) == (3, 0, 0)
    assert {entry["eventId"] for entry in summary["entries"]} == set(ids)
    assert stream_length(stack) == before
    assert letters_by_event(stack) == letters_before
    assert stack.count("processed_events", {"status": "dead_lettered"}) == 3

    discarded = replay_json(stack.env, "--discard", "--event-id", ids[0])
    assert discarded["action"] == "discard"
    assert (discarded["matched"], discarded["discarded"], discarded["replayed"]) == (1, 1, 0)
    assert discarded["entries"][0]["result"] == "discarded"
    letters = letters_by_event(stack)
    assert letters[ids[0]]["reviewStatus"] == "discarded"
    assert letters[ids[0]]["discardedAt"] is not None
    assert [letters[i]["reviewStatus"] for i in ids[1:]] == ["pending", "pending"]
    assert stream_length(stack) == before
    # A discarded entry is no longer selectable.
    after = replay_json(stack.env, "--event-id", ids[0], "--request-id", "late")
    assert (after["matched"], after["replayed"]) == (0, 0)


@pytest.mark.parametrize(
    ("args", "drop", "message"),
    [
        ((), None, "choose what to replay with --event-id"),
        (("--since", "yesterday"), None, "'yesterday' is not an RFC 3339 time"),
        (("--since", "2026-11-25T10:00:00"), None, "has no time zone"),
        (("--all", "--rate", "0"), None, "argument --rate: '0' must be greater than 0"),
        (("--all", "--limit", "-1"), None, "argument --limit: '-1' must be greater than 0"),
        (("--all", "--request-id", "bad id!"), None, "argument --request-id: a request id is"),
        (
            ("--since", "2026-11-25T10:00:00Z", "--until", "2026-11-25T09:00:00Z"),
            None,
            "--since must be earlier than --until",
        ),
        (("--all", "--event-id", "evt_1"), None, "usage error: --all selects every pending"),
        (("--all",), "MONGO_URI", "configuration error: MONGO_URI: is required"),
    ],
    ids=[
        "no-selector",
        "since-not-a-time",
        "since-without-zone",
        "rate-zero",
        "limit-negative",
        "bad-request-id",
        "since-after-until",
        "all-with-event-id",
        "mongo-uri-missing",
    ],
)
def test_bad_arguments_exit_2_with_a_clear_message(
    redis_server: RedisServer,
    store_server: StoreServer,
    args: tuple[str, ...],
    drop: str | None,
    message: str,
) -> None:
    stack = StackEnv.create(redis_server, store_server)
    env = {name: value for name, value in stack.env.items() if name != drop}
    result = run_replay(env, *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""
    assert stack.count("dead_letter_events") == 0
