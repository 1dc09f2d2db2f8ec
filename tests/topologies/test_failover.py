"""A primary SIGKILLed under load: with ``ENQUEUE_MIN_REPLICAS=1`` no acknowledged event is lost.

- Sentinel (1 primary, 1 replica, 3 sentinels): the sentinels promote the replica; the same
  ingress and worker processes follow it (no restart), every event answered 202 reaches a
  terminal state, none is applied twice;
- Cluster (3 primaries, 3 replicas, six partitions): one primary is killed, its replica takes
  over its slots, and the same holds.

The load is paced at up to 200 requests a second from several threads; whatever this machine
manages, the primary dies in the middle of it. A 503 during the failover is the contract (the
courier re-sends); a 202 is a promise that must be kept.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import StartGateway
from tests.support.servers import GatewayProcess, RedisServer, StoreServer
from tests.support.signing import event, signed
from tests.support.stack import SECRET, StackEnv, history
from tests.support.topologies import ClusterSetup, SentinelSetup

pytestmark = pytest.mark.serial

RATE = 200  # requests per second offered
THREADS = 8


class Load:
    """Posts fresh events at up to ``RATE``/s until stopped; remembers what got a 202."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.accepted: list[str] = []
        self.statuses: Counter[int] = Counter()
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def _post(self, client: httpx.Client) -> None:
        document = event()
        body, headers = signed(document, SECRET)
        try:
            status = client.post(f"{self.url}/v1/events/courier", content=body, headers=headers)
            code = status.status_code
        except httpx.HTTPError:
            code = 0
        with self.lock:
            self.statuses[code] += 1
            if code == 202:
                self.accepted.append(document["eventId"])

    def _run(self) -> None:
        interval = THREADS / RATE
        with httpx.Client(timeout=10) as client:
            next_at = time.monotonic()
            while not self.stop.is_set():
                self._post(client)
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))

    def start(self) -> ThreadPoolExecutor:
        pool = ThreadPoolExecutor(THREADS)
        for _ in range(THREADS):
            pool.submit(self._run)
        return pool


def run_failover(stack: StackEnv, kill: object, processes: list[GatewayProcess]) -> Load:
    """Load for 3 s, ``kill()``, load 8 s more; then every 202 must become terminal."""
    assert callable(kill)
    load = Load(stack.url)
    pool = load.start()
    try:
        time.sleep(3)
        kill()
        time.sleep(8)
    finally:
        load.stop.set()
        pool.shutdown(wait=True)
    assert load.statuses[202] > 300, load.statuses
    accepted = set(load.accepted)
    assert stack.wait_terminal(len(accepted), timeout=120), (
        f"{stack.count('processed_events')} of {len(accepted)} accepted events are terminal"
    )
    records = stack.find("processed_events")
    assert {r["eventId"] for r in records} >= accepted  # nothing acknowledged was lost
    assert Counter(r["status"] for r in records) == {"processed": len(records)}
    keys = [e["idempotencyKey"] for doc in stack.find("active_shipments") for e in history(doc)]
    assert len(keys) == len(set(keys))  # nothing applied twice
    for process in processes:  # followed the failover without a restart
        assert process.child.process.poll() is None
    return load


def test_sentinel_failover_under_load_loses_no_acknowledged_event(
    start: StartGateway,
    redis_sentinel: SentinelSetup,
    redis_server: RedisServer,
    store_server: StoreServer,
) -> None:
    stack = StackEnv.create(
        redis_server,
        store_server,
        REDIS_URL="",
        REDIS_MODE="sentinel",
        REDIS_SENTINELS=redis_sentinel.sentinels_env(),
        REDIS_SENTINEL_MASTER=redis_sentinel.master_name,
        ENQUEUE_MIN_REPLICAS="1",
        ENQUEUE_TIMEOUT_MS="1000",
        WORKER_CONCURRENCY="20",
    )
    ingress = start("ingress", stack.env)
    worker = start("worker", stack.env, wait_ready=False)
    old = redis_sentinel.primary_port()

    def kill() -> None:
        redis_sentinel.kill_primary()

    run_failover(stack, kill, [ingress, worker])
    assert redis_sentinel.primary_port() != old


def test_cluster_primary_killed_under_load_loses_no_acknowledged_event(
    start: StartGateway,
    redis_cluster: ClusterSetup,
    redis_server: RedisServer,
    store_server: StoreServer,
) -> None:
    stack = StackEnv.create(
        redis_server,
        store_server,
        REDIS_URL=redis_cluster.url,
        REDIS_MODE="cluster",
        QUEUE_PARTITIONS="6",
        ENQUEUE_MIN_REPLICAS="1",
        ENQUEUE_TIMEOUT_MS="1000",
        WORKER_CONCURRENCY="20",
    )
    ingress = start("ingress", stack.env)
    worker = start("worker", stack.env, wait_ready=False)
    victim = max(redis_cluster.primaries())

    def kill() -> None:
        redis_cluster.kill_node(victim)

    try:
        run_failover(stack, kill, [ingress, worker])
        assert victim not in redis_cluster.primaries()
    finally:
        if not redis_cluster.nodes[victim].running:
            redis_cluster.wait_failover(victim)
            redis_cluster.restart_node(victim)
