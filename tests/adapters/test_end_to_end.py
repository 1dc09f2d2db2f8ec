"""Provider adapters end to end: real ingress and worker processes, real Redis and store.

Proved here, for every built-in provider adapter: its documented sample, signed the provider's
way, gets the provider's success status and becomes the expected canonical events in the store;
a tampered body, a wrong key, a missing credential and a stale timestamp (where the provider
signs one) get 401 naming the failing check and enqueue nothing. A Ship24 message of 3 trackings
x 2 events becomes 6 terminal events and has no effect when re-sent; a FedEx history re-sent with
one new (older) scan adds exactly one history entry and never regresses the status; a status the
adapter does not know is dead-lettered UNMAPPED with the provider's original item, and after an
adapter file adds it (ADAPTERS_DIR, no restart) ``courier-gateway replay`` applies it and new
requests map. A batch with one malformed event and a rate-limited batch enqueue nothing. Ship24's
HEAD probe is answered 200. Generated provider requests (hypothesis) never get a 5xx, and a batch
is either queued whole (every event queued or a duplicate) or refused with nothing queued.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from courier_gateway.adapters import builtin_registry
from courier_gateway.adapters.signing import SignedRequest, alternatives, sign_request
from courier_gateway.tenancy import scoped
from tests.adapters.golden_support import cases
from tests.support.servers import GatewayProcess, RedisServer, StoreServer, start_gateway, wait_for
from tests.support.stack import StackEnv, history

REGISTRY = builtin_registry()
PROVIDERS = sorted(a.name for a in REGISTRY if not a.canonical)
# Sources named after their adapter ("17track" is a valid source name too).
KEYS = {name: f"e2e-{name}-key-0001" for name in PROVIDERS}
LIMITED = "ship24-limited"


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer, store_server: StoreServer
) -> Iterator[tuple[StackEnv, Path]]:
    directory = tmp_path_factory.mktemp("adapters-e2e")
    adapters_dir = directory / "adapters"
    adapters_dir.mkdir()
    sources: dict[str, Any] = {
        name: {"adapter": name, "secrets": [{"id": "k1", "value": KEYS[name]}]}
        for name in PROVIDERS
    }
    sources[LIMITED] = {
        "adapter": "ship24",
        "secrets": [{"id": "k1", "value": KEYS["ship24"]}],
        "rateLimit": {"perSecond": 0.01, "burst": 2},
    }
    sources_file = directory / "sources.yaml"
    sources_file.write_text(yaml.safe_dump({"sources": sources}))
    env = StackEnv.create(
        redis_server,
        store_server,
        SOURCES_FILE=str(sources_file),
        ADAPTERS_DIR=str(adapters_dir),
        SECRETS_RELOAD_SECONDS="0.5",
    )
    env.env.pop("SIGNING_SECRET")
    processes: list[GatewayProcess] = []
    try:
        processes.append(start_gateway("ingress", env.env, log_path=directory / "ingress.log"))
        processes.append(
            start_gateway("worker", env.env, log_path=directory / "worker.log", wait_ready=False)
        )
        yield env, adapters_dir
    finally:
        for process in reversed(processes):
            process.stop(timeout=15)


def post(
    env: StackEnv,
    source: str,
    body: bytes,
    signed: SignedRequest,
    client: httpx.Client | None = None,
) -> httpx.Response:
    http = client or httpx
    return http.post(  # type: ignore[attr-defined]
        f"{env.url}/v1/events/{source}",
        content=body,
        headers=signed.headers,
        params=signed.query,
        timeout=15,
    )


def sign(
    name: str, body: bytes, *, key: str | None = None, now: int | None = None, alternative: int = 0
) -> SignedRequest:
    adapter = REGISTRY.get(name)
    assert adapter is not None
    return sign_request(
        adapter, body, key or KEYS[name], now=now or int(time.time()), alternative=alternative
    )


def stream_length(env: StackEnv) -> int:
    """Entries ever added to the queue's streams (the worker trims what it finished, so not
    XLEN)."""
    client = env.queue_client()
    try:
        return sum(int(client.xinfo_stream(s)["entries-added"]) for s in env.layout.streams)
    finally:
        client.close()


def shipment(env: StackEnv, source: str, shipment_id: str) -> dict[str, Any] | None:
    found = env.find("active_shipments", {"_id": scoped(source, shipment_id)})
    return found[0] if found else None


def ledger(env: StackEnv, source: str, key: str) -> dict[str, Any] | None:
    found = env.find("processed_events", {"_id": scoped(source, key)})
    return found[0] if found else None


def golden_events(name: str) -> list[dict[str, Any]]:
    expected: list[dict[str, Any]] = cases(name)[0]["expect"]["events"]
    return [
        {
            **event,
            "source": name,
            "idempotencyKey": event["idempotencyKey"].replace("carrier:", f"{name}:", 1),
        }
        for event in expected
    ]


@pytest.mark.parametrize("name", PROVIDERS)
def test_the_documented_sample_signed_the_providers_way_reaches_the_store(stack, name: str) -> None:
    env, _ = stack
    adapter = REGISTRY.get(name)
    assert adapter is not None and adapter.document.sample is not None
    body = adapter.document.sample.encode()
    for alternative in range(alternatives(adapter)):  # every way the provider may sign
        answer = post(env, name, body, sign(name, body, alternative=alternative))
        assert answer.status_code == adapter.success_status == 200, answer.text
        document = answer.json()
        assert document["acknowledged"] is True
    expected = golden_events(name)
    assert len(document["events"]) == len(expected)
    for event in expected:
        record_present = wait_for(
            lambda e=event: (
                (ledger(env, name, e["idempotencyKey"]) or {}).get("status") == "processed"
            ),
            timeout=60,
        )
        assert record_present, (
            name,
            event["eventId"],
            env.find("dead_letter_events", {"tenant": name}),
        )
    by_shipment: dict[str, list[dict[str, Any]]] = {}
    for event in expected:
        by_shipment.setdefault(event["payload"]["shipmentId"], []).append(event)
    for shipment_id, events in by_shipment.items():
        stored = shipment(env, name, shipment_id)
        assert stored is not None
        entries = history(stored)
        assert sorted(e["eventId"] for e in entries) == sorted(e["eventId"] for e in events)
        assert {e["status"] for e in entries} == {e["payload"]["status"] for e in events}
        latest = max(events, key=lambda e: e["occurredAt"])
        assert stored["status"] == latest["payload"]["status"]
        assert stored["tenant"] == name if "tenant" in stored else True


def _refusals(name: str) -> list[tuple[str, bytes, SignedRequest, str]]:
    adapter = REGISTRY.get(name)
    assert adapter is not None and adapter.document.sample is not None
    body = adapter.document.sample.encode()
    cases_: list[tuple[str, bytes, SignedRequest, str]] = [
        ("wrong key", body, sign(name, body, key="another-key-entirely-9"), "does not match"),
        (
            "missing credential",
            body,
            SignedRequest(headers={"content-type": "application/json"}),
            "missing",
        ),
    ]
    signs_body = name not in {"ship24", "ups", "dhl"}
    if signs_body:
        tampered = body.replace(b"2", b"3", 1)
        cases_.append(("tampered body", tampered, sign(name, body), "does not match"))
    if name == "shippo":
        stale = sign(name, body, now=int(time.time()) - 400)
        cases_.append(("stale timestamp", body, stale, "in the past"))
    return cases_


@pytest.mark.parametrize("name", PROVIDERS)
def test_forged_requests_are_refused_naming_the_check_and_enqueue_nothing(stack, name: str) -> None:
    env, _ = stack
    before = stream_length(env)
    with httpx.Client(timeout=15) as client:
        for what, body, signed, mentions in _refusals(name):
            answer = post(env, name, body, signed, client)
            assert answer.status_code == 401, (what, answer.text)
            document = answer.json()
            assert document["errorCode"] == "INVALID_SIGNATURE"
            assert mentions in document["message"], (what, document["message"])
    assert stream_length(env) == before


def test_ship24_three_trackings_of_two_events_are_six_terminal_events_and_a_resend_changes_nothing(
    stack,
) -> None:
    env, _ = stack
    body = json.dumps(
        next(c for c in cases("ship24") if c["name"] == "3 trackings x 2 events")["body"]
    ).encode()
    first = post(env, "ship24", body, sign("ship24", body))
    assert first.status_code == 200, first.text
    assert first.json()["queued"] == 6
    keys = [event["idempotencyKey"] for event in first.json()["events"]]
    assert wait_for(
        lambda: all((ledger(env, "ship24", k) or {}).get("status") == "processed" for k in keys),
        timeout=60,
    )
    for number in ("S24BATCH0000", "S24BATCH0001", "S24BATCH0002"):
        stored = shipment(env, "ship24", number)
        assert stored is not None
        assert stored["status"] == "delivered"
        assert len(stored["history"]) == 2
    before_stream, before_ledger = stream_length(env), env.count("processed_events")
    again = post(env, "ship24", body, sign("ship24", body))
    assert again.status_code == 200
    assert again.json()["queued"] == 0
    assert again.json()["duplicates"] == 6
    assert stream_length(env) == before_stream
    assert env.count("processed_events") == before_ledger


def test_a_fedex_history_resent_with_one_new_entry_adds_exactly_it_and_never_regresses(
    stack,
) -> None:
    env, _ = stack
    adapter = REGISTRY.get("fedex")
    assert adapter is not None and adapter.document.sample is not None
    document = json.loads(adapter.document.sample)
    result = document["output"]["completeTrackResults"][0]
    result["trackingNumber"] = "794800000001"
    scans = result["trackResults"][0]["scanEvents"]
    scans.insert(
        0,
        {
            **scans[0],
            "date": "2024-05-02T15:40:00-05:00",
            "eventType": "DL",
            "derivedStatusCode": "DL",
            "eventDescription": "Delivered",
        },
    )
    body = json.dumps(document).encode()
    assert post(env, "fedex", body, sign("fedex", body)).json()["queued"] == 4
    assert wait_for(
        lambda: len((shipment(env, "fedex", "794800000001") or {}).get("history", {})) == 4,
        timeout=60,
    )
    # The carrier resends the whole history with one late, older scan (arrival before pick-up
    # was recorded): it is one new entry; the status stays delivered.
    resent = copy.deepcopy(document)
    late = {
        **scans[-1],
        "date": "2024-04-30T19:00:00-04:00",
        "eventType": "AR",
        "derivedStatusCode": "AR",
        "eventDescription": "At origin facility",
    }
    resent["output"]["completeTrackResults"][0]["trackResults"][0]["scanEvents"].append(late)
    body = json.dumps(resent).encode()
    answer = post(env, "fedex", body, sign("fedex", body)).json()
    assert (answer["queued"], answer["duplicates"]) == (1, 4)
    assert wait_for(
        lambda: len((shipment(env, "fedex", "794800000001") or {}).get("history", {})) == 5,
        timeout=60,
    )
    time.sleep(1.0)  # nothing else may arrive
    stored = shipment(env, "fedex", "794800000001")
    assert stored is not None
    assert len(stored["history"]) == 5
    assert stored["status"] == "delivered"
    assert env.count("dead_letter_events", {"tenant": "fedex"}) == 0


def test_an_unmapped_status_is_dead_lettered_with_its_original_then_fixed_and_replayed(
    stack,
) -> None:
    env, adapters_dir = stack
    adapter = REGISTRY.get("dhl")
    assert adapter is not None and adapter.document.sample is not None
    document = json.loads(adapter.document.sample)
    document["shipments"][0]["id"] = "00340434169999999999"
    document["shipments"][0]["events"][1]["statusCode"] = "handed-to-neighbour"
    body = json.dumps(document).encode()
    answer = post(env, "dhl", body, sign("dhl", body))
    assert answer.status_code == 200
    assert answer.json()["unmapped"] == 1
    assert wait_for(
        lambda: env.count("dead_letter_events", {"tenant": "dhl", "reasonCode": "UNMAPPED"}) == 1,
        timeout=60,
    )
    (letter,) = env.find("dead_letter_events", {"tenant": "dhl", "reasonCode": "UNMAPPED"})
    assert (
        "status 'handed-to-neighbour' is not in the adapter's status map" in letter["reasonMessage"]
    )
    assert (
        json.loads(letter["unmapped"]["original"])["event"] == document["shipments"][0]["events"][1]
    )
    stored = shipment(env, "dhl", "00340434169999999999")
    assert stored is not None and len(stored["history"]) == 2
    # The fix: an adapter file extending the built-in, no restart.
    (adapters_dir / "dhl.yaml").write_text(
        "name: dhl\nextends: dhl\nevent:\n  status:\n    map: {handed-to-neighbour: delivered}\n"
    )
    replay = subprocess.run(
        [
            sys.executable,
            "-m",
            "courier_gateway",
            "replay",
            "--reason",
            "UNMAPPED",
            "--source",
            "dhl",
            "--json",
        ],
        env={"PATH": os.environ["PATH"], **{k: v for k, v in env.env.items() if k != "API_PORT"}},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert replay.returncode == 0, replay.stderr
    summary = json.loads(replay.stdout)
    assert summary["replayed"] == 1, summary
    assert summary["entries"][0]["result"] == "replayed (re-mapped)"
    assert wait_for(
        lambda: len((shipment(env, "dhl", "00340434169999999999") or {}).get("history", {})) == 3,
        timeout=60,
    )
    assert env.find("dead_letter_events", {"tenant": "dhl"})[0]["reviewStatus"] == "replayed"
    # And the ingress took the file too: the same status now maps on arrival.
    document["shipments"][0]["id"] = "00340434168888888888"
    body = json.dumps(document).encode()

    def maps_now() -> bool:
        return post(env, "dhl", body, sign("dhl", body)).json()["unmapped"] == 0

    assert wait_for(maps_now, timeout=20, interval=0.5)


def test_a_batch_with_one_malformed_event_or_over_the_rate_limit_enqueues_nothing(stack) -> None:
    env, _ = stack
    batch = copy.deepcopy(
        next(c for c in cases("ship24") if c["name"] == "3 trackings x 2 events")["body"]
    )
    for tracking in batch["trackings"]:
        for event in tracking["events"]:
            event["eventId"] = "b-" + event["eventId"]
    del batch["trackings"][2]["events"][1]["eventId"]
    body = json.dumps(batch).encode()
    before = stream_length(env)
    answer = post(env, "ship24", body, sign("ship24", body))
    assert answer.status_code == 400
    assert answer.json()["message"].startswith("event.eventId at tracking[2].event[1]:")
    assert stream_length(env) == before
    # The limited source's bucket holds 2 tokens: the first batch takes them, the second none.
    del batch["trackings"][2]["events"][1]
    body = json.dumps(batch).encode()
    assert post(env, LIMITED, body, sign("ship24", body)).status_code == 200
    middle = stream_length(env)
    assert middle == before + 5
    batch["trackings"][0]["events"][0]["eventId"] = "fresh-event-1"
    body = json.dumps(batch).encode()
    limited = post(env, LIMITED, body, sign("ship24", body))
    assert limited.status_code == 429
    assert stream_length(env) == middle


def test_probes_are_answered_per_adapter(stack) -> None:
    env, _ = stack
    assert httpx.head(f"{env.url}/v1/events/ship24").status_code == 200
    refused = httpx.head(f"{env.url}/v1/events/fedex")
    assert refused.status_code == 405
    assert refused.headers["allow"] == "POST"
    assert httpx.get(f"{env.url}/v1/events/ship24").headers["allow"] == "POST, HEAD"
    assert httpx.head(f"{env.url}/v1/events/nosuch").status_code == 404


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 2**40),
    st.text(max_size=12),
    st.sampled_from(["delivered", "in_transit", "2021-03-04T17:12:57", "", "a b", "$x"]),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["eventId", "events", "trackings", "statusMilestone", "x"]),
            children,
            max_size=3,
        )
    ),
    max_leaves=10,
)


@st.composite
def provider_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    """A Ship24 or AfterShip body: the sample or a batch with random edits, or random JSON."""
    name = draw(st.sampled_from(["ship24", "aftership"]))
    adapter = REGISTRY.get(name)
    assert adapter is not None and adapter.document.sample is not None
    if draw(st.integers(0, 4)) == 0:
        return name, json.dumps(draw(json_values)).encode()
    document = json.loads(adapter.document.sample)
    if name == "ship24":
        document = copy.deepcopy(
            next(c for c in cases("ship24") if c["name"] == "3 trackings x 2 events")["body"]
        )
        run = draw(st.integers(0, 10**9))
        for tracking in document["trackings"]:
            for event in tracking["events"]:
                event["eventId"] = f"h{run}-{event['eventId']}"
        for _ in range(draw(st.integers(0, 3))):
            tracking = draw(st.sampled_from(document["trackings"]))
            event = draw(st.sampled_from(tracking["events"]))
            field = draw(
                st.sampled_from(
                    ["eventId", "statusMilestone", "occurrenceDatetime", "trackingNumber"]
                )
            )
            event[field] = draw(json_values)
    else:
        document["event_id"] = f"h-{draw(st.integers(0, 10**9))}"
        document["msg"][draw(st.sampled_from(["tag", "tracking_number", "order_id"]))] = draw(
            json_values
        )
    return name, json.dumps(document).encode()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(case=provider_requests())
def test_property_never_a_5xx_never_a_partial_batch(stack, case: tuple[str, bytes]) -> None:
    env, _ = stack
    name, body = case
    before = stream_length(env)
    answer = post(env, name, body, sign(name, body))
    added = stream_length(env) - before
    assert answer.status_code in {200, 400}, answer.text
    document = answer.json()
    if answer.status_code == 400:
        assert document["errorCode"] == "INVALID_PAYLOAD"
        assert added == 0  # refused whole: nothing of the batch was queued
        return
    events = document["events"]
    # Every event of the batch is on the stream (queued now) or was before (a duplicate).
    assert document["queued"] + document["duplicates"] == len(events)
    assert added == document["queued"]
