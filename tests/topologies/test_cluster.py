"""The end-to-end behaviours on a real Redis Cluster (3 primaries, 3 replicas), six partitions.

Every test runs a real ingress and worker with ``REDIS_MODE=cluster`` and
``QUEUE_PARTITIONS=6`` against six ``redis-server --cluster-enabled yes`` processes, on its own
queue name, sharing one cluster:

- duplicates are answered from the hint and applied once; out-of-order events never regress a
  shipment; a request's events spread over partitions on several primaries;
- retries wait in their partition's schedule and succeed; exhausted ones are dead-lettered and
  ``courier-gateway replay`` brings them back through their partitions;
- a worker SIGKILLed with messages in flight in several partitions: a new worker reclaims and
  finishes them, each applied once, while trimming runs every half second and drops nothing
  unacknowledged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

from courier_gateway.queue.layout import QueueLayout
from tests.conftest import StartGateway
from tests.support.downstream import Downstream
from tests.support.servers import RedisServer, StoreServer, wait_for
from tests.support.signing import event
from tests.support.stack import StackEnv, history, post_events
from tests.support.topologies import ClusterSetup

PARTITIONS = 6


def cluster_stack(
    cluster: ClusterSetup, redis_server: RedisServer, store_server: StoreServer, **env: str
) -> StackEnv:
    """A stack whose queue lives on the cluster (the standalone server is not used)."""
    return StackEnv.create(
        redis_server,
        store_server,
        REDIS_URL=cluster.url,
        REDIS_MODE="cluster",
        QUEUE_PARTITIONS=str(PARTITIONS),
        **env,
    )


def layout(stack: StackEnv) -> QueueLayout:
    return QueueLayout(stack.env["QUEUE_STREAM"], PARTITIONS, tagged=True)


def pending(cluster: ClusterSetup, stack: StackEnv) -> int:
    client = cluster.client()
    try:
        return sum(
            int(client.xpending(stream, "courier-workers")["pending"])
            for stream in layout(stack).streams
            if client.exists(stream)
        )
    finally:
        client.close()


def at(seconds: int) -> str:
    moment = datetime(2026, 11, 1, 12, 0, tzinfo=UTC) + timedelta(seconds=seconds)
    return moment.isoformat().replace("+00:00", "Z")


def test_duplicates_and_out_of_order_events_over_partitions_on_three_primaries(
    start: StartGateway,
    redis_cluster: ClusterSetup,
    redis_server: RedisServer,
    store_server: StoreServer,
) -> None:
    stack = cluster_stack(redis_cluster, redis_server, store_server)
    start("ingress", stack.env)
    start("worker", stack.env, wait_ready=False)
    documents = [event() for _ in range(60)]
    first = post_events(stack.url, documents)
    assert {r.status_code for r in first} == {202}
    again = post_events(stack.url, documents[:20])
    assert [r.json()["duplicate"] for r in again] == [True] * 20
    shipment = {"shipmentId": "shp_cluster_ooo", "orderId": "ord_1"}
    delivered = event(occurredAt=at(100), payload={**shipment, "status": "delivered"})
    earlier = event(occurredAt=at(50), payload={**shipment, "status": "out_for_delivery"})
    post_events(stack.url, [delivered])
    assert stack.wait_terminal(61, timeout=60)
    post_events(stack.url, [earlier])
    assert stack.wait_terminal(62, timeout=30)

    assert Counter(r["status"] for r in stack.find("processed_events")) == {"processed": 62}
    [document] = stack.find("active_shipments", {"shipmentId": "shp_cluster_ooo"})
    assert document["status"] == "delivered"
    assert [entry["status"] for entry in history(document)] == ["out_for_delivery", "delivered"]
    # The events really were spread: every partition got some, on all three primaries.
    client = redis_cluster.client()
    try:
        used = [s for s in layout(stack).streams if client.exists(s)]
        owners = {client.get_node_from_key(s).port for s in used}
    finally:
        client.close()
    assert len(used) == PARTITIONS
    assert len(owners) == 3


def test_retries_dead_letters_and_replay_through_the_partitions(
    start: StartGateway,
    redis_cluster: ClusterSetup,
    redis_server: RedisServer,
    store_server: StoreServer,
) -> None:
    failing: set[str] = set()

    def respond(request: object, count: int) -> tuple[int, dict[str, str]]:
        if request.body["eventId"] in failing:  # type: ignore[attr-defined]
            return 503, {}
        return (503 if count <= 1 else 200), {}

    downstream = Downstream(respond=respond).start()
    try:
        stack = cluster_stack(
            redis_cluster,
            redis_server,
            store_server,
            **downstream.env(),
            RETRY_MAX_ATTEMPTS="3",
            RETRY_BASE_DELAY_MS="100",
            RETRY_JITTER="0",
            BREAKER_FAILURE_THRESHOLD="1000",
        )
        doomed = [event() for _ in range(6)]
        failing.update(d["eventId"] for d in doomed)
        recovering = [event() for _ in range(12)]
        start("ingress", stack.env)
        start("worker", stack.env, wait_ready=False)
        assert {r.status_code for r in post_events(stack.url, recovering + doomed)} == {202}
        assert stack.wait_terminal(18, timeout=60)
        records = {r["eventId"]: r for r in stack.find("processed_events")}
        for document in recovering:
            record = records[document["eventId"]]
            assert record["status"] == "processed"
            assert [a["outcome"] for a in record["attempts"]] == ["retry", "processed"]
        letters = {letter["eventId"]: letter for letter in stack.find("dead_letter_events")}
        assert set(letters) == {d["eventId"] for d in doomed}
        assert {letter["reasonCode"] for letter in letters.values()} == {"RETRIES_EXHAUSTED"}

        failing.clear()
        replayed = subprocess.run(
            [
                *(sys.executable, "-m", "courier_gateway", "replay"),
                *("--reason", "RETRIES_EXHAUSTED", "--rate", "100", "--json"),
            ],
            env={"PATH": os.environ["PATH"], **stack.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
        assert json.loads(replayed.stdout)["replayed"] == 6
        assert wait_for(
            lambda: stack.count("processed_events", {"status": "processed"}) == 18, timeout=60
        )
        assert stack.count("dead_letter_events", {"reviewStatus": "replayed"}) == 6
    finally:
        downstream.stop()


def test_a_killed_worker_s_messages_are_reclaimed_in_every_partition_and_none_trimmed(
    start: StartGateway,
    redis_cluster: ClusterSetup,
    redis_server: RedisServer,
    store_server: StoreServer,
) -> None:
    downstream = Downstream(delay=1.0).start()
    try:
        stack = cluster_stack(
            redis_cluster,
            redis_server,
            store_server,
            **downstream.env(),
            WORKER_CONCURRENCY="40",
            WORKER_IDLE_TIMEOUT_MS="3000",
            STREAM_TRIM_INTERVAL_SECONDS="0.5",
        )
        start("ingress", stack.env)
        documents = [event() for _ in range(150)]
        assert {r.status_code for r in post_events(stack.url, documents)} == {202}
        victim = start("worker", stack.env, wait_ready=False)
        assert wait_for(lambda: pending(redis_cluster, stack) >= 30, timeout=30)
        victim.child.process.send_signal(signal.SIGKILL)
        victim.child.process.wait(timeout=5)
        assert pending(redis_cluster, stack) >= 30

        start("worker", stack.env, wait_ready=False)  # no new traffic from here on
        assert stack.wait_terminal(150, timeout=90)
        records = stack.find("processed_events")
        assert Counter(r["status"] for r in records) == {"processed": 150}
        keys = [
            entry["idempotencyKey"]
            for doc in stack.find("active_shipments")
            for entry in history(doc)
        ]
        assert len(keys) == len(set(keys)) == 150
        assert wait_for(lambda: pending(redis_cluster, stack) == 0, timeout=20)
        # Trimming ran all along (every 0.5 s) and has since dropped every acknowledged entry
        # but each stream's last delivered one (the group's floor).
        client = redis_cluster.client()
        try:
            assert wait_for(
                lambda: all(client.xlen(s) <= 1 for s in layout(stack).streams), timeout=20
            )
        finally:
            client.close()
    finally:
        downstream.stop()
