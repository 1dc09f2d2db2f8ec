"""``courier-gateway events`` and ``deadletters`` tell the right story of each kind of event.

One real stack for the module (ingress and worker processes, Redis, the store, a downstream
that fails one event's first two deliveries); the commands run in this process through the
command's own ``main`` with the environment an operator would have. Proved here:

- ``events show`` on a processed event: first attempt, its shipment is current from it, and
  re-sent copies are absorbed as duplicates;
- on a retried event: ``retrying`` with the next attempt's due time while it waits, then
  processed on attempt 3 with both failures listed;
- on a dead-lettered event: the reason, its attempt, the shipment untouched, the replay command;
- on a duplicate that had its own event id: unknown by id (exit 1, pointing at ``--key``), and
  by key the story of the event that first used the key;
- on an unknown event: exit 1 and what could explain it;
- ``events list`` filters by source, status and time; ``deadletters stats/list/show`` count and
  show the dead letters, in tables and as JSON, with RFC 3339 times; wrong arguments are usage
  errors;
- sources are tenants: the same event id sent by two sources is two stories, each found by its
  source, with its shipment in that source's namespace;
- ``replay`` draws a progress line when its standard error is a terminal (a real pty here), and
  none on piped output.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from courier_gateway.cli import main
from courier_gateway.config import Scheme
from tests.conftest import base_env
from tests.support.downstream import Downstream, Received
from tests.support.servers import GatewayProcess, RedisServer, StoreServer, start_gateway, wait_for
from tests.support.signing import event, signed
from tests.support.sources import COURIER_SECRET, DHL_SECRET, write_sources
from tests.support.stack import StackEnv

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RETRIED = "evt_retried_1"
SIGNING = {
    "courier": (COURIER_SECRET, Scheme.V1),
    "dhl": (DHL_SECRET, Scheme.STANDARD_WEBHOOKS),
}


def flaky_for_one_event(request: Received, count: int) -> tuple[int, dict[str, str]]:
    """503 for the first two deliveries of the retried event, 200 for everything else."""
    if request.body.get("eventId") == RETRIED and count <= 2:
        return 503, {}
    return 200, {}


@dataclass
class Stack:
    env: StackEnv
    processes: list[GatewayProcess]

    def post(self, document: dict[str, Any], source: str = "courier") -> dict[str, Any]:
        secret, scheme = SIGNING[source]
        body, headers = signed(document, secret, scheme=scheme)
        response = httpx.post(
            f"{self.env.url}/v1/events/{source}", content=body, headers=headers, timeout=10
        )
        assert response.status_code == 202, response.text
        answer: dict[str, Any] = response.json()
        return answer


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, store_server: StoreServer
) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("events")
    downstream = Downstream(respond=flaky_for_one_event).start()
    env = StackEnv.create(
        redis_server,
        store_server,
        **downstream.env(),
        SOURCES_FILE=str(write_sources(directory / "sources.yaml")),
        SIGNING_SECRET="",  # the sources file configures courier
        RETRY_MAX_ATTEMPTS="3",
        RETRY_BASE_DELAY_MS="2500",
        RETRY_JITTER="0",
        BREAKER_FAILURE_THRESHOLD="1000",
    )
    processes: list[GatewayProcess] = []
    try:
        processes.append(start_gateway("ingress", env.env, log_path=directory / "ingress.log"))
        processes.append(
            start_gateway("worker", env.env, log_path=directory / "worker.log", wait_ready=False)
        )
        yield Stack(env, processes)
    finally:
        for process in reversed(processes):
            process.stop(timeout=10)
        downstream.stop()


@pytest.fixture
def operator_shell(stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """The environment of an operator next to the stack, in a directory without ``.data``."""
    monkeypatch.chdir(tmp_path)
    for name in [*base_env("redis://unused"), "MONGO_URI", "MONGO_DB", "SIGNING_SECRET"]:
        monkeypatch.delenv(name, raising=False)
    # Where the queue is, as the stack has it (REDIS_MODE and QUEUE_PARTITIONS on a cluster).
    wanted = (
        "REDIS_URL",
        "REDIS_MODE",
        "QUEUE_PARTITIONS",
        "MONGO_URI",
        "MONGO_DB",
        "QUEUE_STREAM",
    )
    env = {name: stack.env.env[name] for name in wanted if name in stack.env.env}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``courier-gateway ARGS`` in this process; return the exit code, stdout, stderr."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def show(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    """``events show ARGS --json`` for an event with one idempotency key."""
    code, out, err = cli(capsys, "events", "show", *args, "--json")
    assert err == "", err
    [story] = json.loads(out)
    return code, story


def test_processed_event_and_its_duplicates(
    stack: Stack, operator_shell: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    document = event(eventId="evt_plain_1")
    first = stack.post(document)
    again = stack.post(document)
    assert again["duplicate"] is True
    code, story = show(capsys, "courier", "evt_plain_1", "--wait", "20")
    assert code == 0
    assert story["outcome"] == "processed"
    assert story["summary"] == "processed on the first attempt"
    assert story["traceId"] == first["traceId"]
    assert [a["outcome"] for a in story["attempts"]] == ["processed"]
    assert story["shipment"]["effect"] == "current"
    assert story["shipment"]["shipmentId"] == document["payload"]["shipmentId"]
    assert story["deadLetter"] is None
    intake = story["intake"]
    assert intake["receivedAt"] == first["receivedAt"]
    assert intake["streamEntry"] and RFC3339.match(intake["queuedAt"])
    assert 0 < intake["duplicateHintSeconds"] <= 3600
    for moment in (story["ledger"]["createdAt"], story["ledger"]["processedAt"]):
        assert RFC3339.match(moment), moment

    code, text, _ = cli(capsys, "events", "show", "courier", "evt_plain_1")
    assert text.startswith("courier evt_plain_1: processed on the first attempt\n")
    assert f"trace id         {first['traceId']}" in text
    assert "duplicates       copies sent again with this idempotency key are not applied" in text
    assert f"{document['payload']['shipmentId']} is 'in_transit', from this event" in text


def test_retried_event_waits_then_is_processed(
    stack: Stack, operator_shell: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    stack.post(event(eventId=RETRIED))
    stories: list[dict[str, Any]] = []

    def retrying() -> bool:
        stories.append(show(capsys, "courier", RETRIED)[1])
        return stories[-1]["outcome"] == "retrying"

    assert wait_for(retrying, timeout=20, interval=0.2), stories[-1]
    waiting = stories[-1]
    assert waiting["summary"].startswith(
        "retrying: attempt 1 failed with DOWNSTREAM_UNAVAILABLE; the next attempt is due at"
    )
    assert RFC3339.match(waiting["nextRetryAt"])
    assert [a["outcome"] for a in waiting["attempts"]] == ["retry"]

    code, story = show(capsys, "courier", RETRIED, "--wait", "30")
    assert code == 0 and story["outcome"] == "processed", story
    assert story["summary"] == ("processed on attempt 3, after 2 failed (DOWNSTREAM_UNAVAILABLE)")
    assert [a["outcome"] for a in story["attempts"]] == ["retry", "retry", "processed"]
    assert story["nextRetryAt"] is None
    assert story["shipment"]["effect"] == "current"


def test_dead_lettered_event(
    stack: Stack, operator_shell: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    document = event(eventId="evt_bad_1")
    document["payload"]["status"] = "teleported"
    stack.post(document)
    code, story = show(capsys, "courier", "evt_bad_1", "--wait", "20")
    assert code == 0
    assert story["outcome"] == "dead_lettered"
    assert story["summary"].startswith("dead-lettered: UNKNOWN_STATUS (status 'teleported'")
    letter = story["deadLetter"]
    assert letter["reasonCode"] == "UNKNOWN_STATUS" and letter["reviewStatus"] == "pending"
    assert RFC3339.match(letter["deadLetteredAt"])
    assert [a["errorCode"] for a in story["attempts"]] == ["UNKNOWN_STATUS"]
    assert story["shipment"]["effect"] == "none"
    assert story["nextStep"].endswith(
        "courier-gateway replay --source courier --event-id evt_bad_1"
    )
    assert story["intake"]["keyId"] == "k1"  # the key of the sources file that verified it

    code, text, _ = cli(capsys, "deadletters", "show", "courier", "evt_bad_1")
    assert code == 0
    assert text.startswith("courier evt_bad_1: UNKNOWN_STATUS (pending): status 'teleported'")
    assert '"status": "teleported"' in text  # the whole event is shown

    code, out, _ = cli(capsys, "deadletters", "stats", "--json")
    stats = json.loads(out)
    assert stats["byReason"]["UNKNOWN_STATUS"] >= 1
    assert stats["bySource"]["courier"] == stats["total"]
    assert stats["byAge"]["under 1 hour"] == stats["total"]
    assert RFC3339.match(stats["oldest"]) and RFC3339.match(stats["newest"])
    code, text, _ = cli(capsys, "deadletters", "stats")
    assert re.search(r"^UNKNOWN_STATUS +\d+$", text, flags=re.MULTILINE), text

    code, out, _ = cli(capsys, "deadletters", "list", "--reason", "UNKNOWN_STATUS", "--json")
    assert "evt_bad_1" in [entry["eventId"] for entry in json.loads(out)]
    code, out, _ = cli(capsys, "deadletters", "list", "--status", "discarded", "--json")
    assert json.loads(out) == []


def test_duplicate_with_its_own_event_id(
    stack: Stack, operator_shell: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    key = "courier:shared-key-1"
    stack.post(event(eventId="evt_first_1", idempotencyKey=key))
    answer = stack.post(event(eventId="evt_copy_1", idempotencyKey=key))
    assert answer["duplicate"] is True
    code, _ = show(capsys, "courier", "evt_first_1", "--wait", "20")
    code, story = show(capsys, "courier", "evt_copy_1")
    assert code == 1 and story["outcome"] == "unknown"
    assert "--key IDEMPOTENCY_KEY" in story["nextStep"]
    code, story = show(capsys, "courier", "evt_copy_1", "--key", key)
    assert code == 0 and story["outcome"] == "duplicate"
    assert story["summary"] == (
        "a duplicate: its idempotency key was first used by event evt_first_1, which is"
        " processed; this one was not processed again"
    )


def test_unknown_event(
    stack: Stack, operator_shell: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, text, err = cli(capsys, "events", "show", "courier", "evt_never_sent")
    assert code == 1 and err == ""
    assert text.startswith("courier evt_never_sent: unknown: no record of this event\n")
    assert "a request refused at intake (4xx) leaves no record" in text
    code, text, _ = cli(capsys, "deadletters", "show", "courier", "evt_never_sent")
    assert code == 1 and "no dead letter" in text


def test_events_list_filters(
    stack: Stack, operator_shell: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    stack.post(event(eventId="evt_listed_1"))
    assert show(capsys, "courier", "evt_listed_1", "--wait", "20")[1]["outcome"] == "processed"
    code, out, _ = cli(capsys, "events", "list", "--source", "courier", "--json")
    rows = json.loads(out)
    assert rows[0]["eventId"] == "evt_listed_1"  # newest first
    assert all(RFC3339.match(row["createdAt"]) for row in rows)
    code, out, _ = cli(capsys, "events", "list", "--status", "dead_lettered", "--json")
    assert {row["status"] for row in json.loads(out)} <= {"dead_lettered"}
    code, out, _ = cli(capsys, "events", "list", "--source", "dhl", "--json")
    assert json.loads(out) == []
    code, out, _ = cli(capsys, "events", "list", "--until", "2020-01-01T00:00:00Z", "--json")
    assert json.loads(out) == []
    code, text, _ = cli(capsys, "events", "list", "--limit", "1")
    assert code == 0
    assert text.splitlines()[0].split() == [
        "FIRST", "TAKEN", "SOURCE", "EVENT", "ID", "STATUS", "ATTEMPTS", "LAST", "ERROR",
    ]  # fmt: skip
    assert "evt_listed_1" in text.splitlines()[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("events", "show", "courier"), "the following arguments are required: EVENT_ID"),
        (("events", "list", "--status", "done"), "argument --status: invalid choice: 'done'"),
        (("events", "list", "--since", "monday"), "'monday' is not an RFC 3339 time"),
        (("deadletters", "list", "--limit", "0"), "'0' must be greater than 0"),
        (("deadletters", "count"), "argument ACTION: invalid choice: 'count'"),
    ],
)
def test_wrong_arguments_are_usage_errors(
    operator_shell: dict[str, str],
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    message: str,
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert "usage error: " in lines[0] and message in lines[0], lines[0]


def test_replay_shows_a_progress_line_on_a_terminal_only(
    stack: Stack, operator_shell: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    document = event(eventId="evt_progress_1", eventType="shipment.teleported")
    stack.post(document)
    assert show(capsys, "courier", "evt_progress_1", "--wait", "20")[1]["outcome"] == (
        "dead_lettered"
    )
    controller, terminal = pty.openpty()
    drawn = bytearray()

    def read_terminal() -> None:
        # Read while it runs: a full terminal buffer would block the command.
        while True:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the command is gone and its side of the terminal closed
                return
            if not chunk:
                return
            drawn.extend(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "courier_gateway", "replay", "--all", "--dry-run"],
            env={"PATH": os.environ["PATH"], **operator_shell},
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(terminal)
        reader.join(timeout=10)
        os.close(controller)
    assert result.returncode == 0
    progress = drawn.decode(errors="replace")
    # tqdm's line: what it does, how far, how many of how many, the rate; cleared at the end.
    assert re.search(r"replaying dead letters: +\d+%\|.*\| \d+/\d+ \[.* events/s\]", progress)
    assert progress.endswith("\r"), progress
    assert "evt_progress_1" in result.stdout and "\r" not in result.stdout


def test_each_source_has_its_own_story_for_the_same_event_id(
    stack: Stack, operator_shell: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    courier = event(eventId="evt_same_1")
    dhl = event(eventId="evt_same_1")
    dhl["payload"] = {**courier["payload"], "status": "delivered"}  # the same shipment id
    stack.post(courier, "courier")
    stack.post(dhl, "dhl")
    code, mine = show(capsys, "courier", "evt_same_1", "--wait", "20")
    assert code == 0 and mine["outcome"] == "processed"
    code, theirs = show(capsys, "dhl", "evt_same_1", "--wait", "20")
    assert code == 0 and theirs["outcome"] == "processed"
    assert mine["traceId"] != theirs["traceId"]
    # One shipment id, two namespaces: each source's event is current in its own.
    assert mine["shipment"]["effect"] == theirs["shipment"]["effect"] == "current"
    assert mine["shipment"]["status"] == "in_transit"
    assert theirs["shipment"]["status"] == "delivered"
    code, out, _ = cli(capsys, "events", "list", "--source", "dhl", "--json")
    assert [row["eventId"] for row in json.loads(out)] == ["evt_same_1"]
    assert {row["source"] for row in json.loads(out)} == {"dhl"}


def test_a_stale_dev_env_file_is_named_in_the_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A killed ``make dev`` leaves ``.data/env`` behind: its ports are gone, and the error says
    where the settings came from."""
    from courier_gateway.devstack.envfile import write_env_file
    from courier_gateway.devstack.processes import free_port

    (tmp_path / ".data").mkdir()
    write_env_file(
        tmp_path / ".data",
        {"MONGO_URI": f"mongodb://127.0.0.1:{free_port()}/", "STORE_TIMEOUT_MS": "300"},
    )
    monkeypatch.chdir(tmp_path)
    for name in ("REDIS_URL", "MONGO_URI", "STORE_TIMEOUT_MS"):
        monkeypatch.delenv(name, raising=False)
    code, out, err = cli(capsys, "deadletters", "stats")
    assert code == 2 and out == ""
    assert err.startswith("courier-gateway: configuration error: MONGO_URI: the store is not")
    origin = tmp_path / ".data" / "env"
    assert err.rstrip().endswith(f"(settings from {origin}: is `make dev` still running there?)")
    assert len(err.splitlines()) == 1, err
