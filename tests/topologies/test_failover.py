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

from collections import Counter
from collections.abc import Callable

import pytest

from tests.conftest import StartGateway
from tests.support.failover import failover_under_load
from tests.support.servers import GatewayProcess, RedisServer, StoreServer
from tests.support.stack import StackEnv, history
from tests.support.topologies import ClusterSetup, SentinelSetup

pytestmark = pytest.mark.serial


def run_failover(
    stack: StackEnv, kill: Callable[[], object], processes: list[GatewayProcess]
) -> None:
    """Load, kill, load more; then every 202 must be terminal, once, with no restart."""
    outcome = failover_under_load(stack, kill)
    assert outcome.statuses[202] > 300, outcome.statuses
    assert outcome.lost == [], f"{len(outcome.lost)} acknowledged events lost"
    records = stack.find("processed_events")
    assert Counter(r["status"] for r in records) == {"processed": len(records)}
    keys = [e["idempotencyKey"] for doc in stack.find("active_shipments") for e in history(doc)]
    assert len(keys) == len(set(keys))  # nothing applied twice
    for process in processes:  # followed the failover without a restart
        assert process.child.process.poll() is None


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
