"""The operator reads a gateway's queue where its pods write it: through a real Sentinel (no URL
Secret at all) and on a real Redis Cluster, with the lag summed over partitions spread over the
cluster's primaries.

The topologies are real ``redis-server`` processes (``tests/support/topologies.py``): one primary,
one replica and three sentinels; six cluster nodes, three primaries with a replica each.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel

from courier_gateway.queue.layout import QueueLayout
from courier_gateway.queue.registry import prepare_partitions
from courier_gateway.queue.topology import AsyncRedis
from courier_operator.kube import COURIER_GATEWAYS, DEPLOYMENTS, SECRETS, KubeClient
from tests.operator.conftest import NAMESPACE, condition, create_gateway, secret
from tests.support.kube import eventually
from tests.support.servers import RedisServer
from tests.support.topologies import ClusterSetup, SentinelSetup

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def sentinel(redis_sentinel: SentinelSetup) -> SentinelSetup:
    """The session's Sentinel setup (this module only reads through it)."""
    return redis_sentinel


@pytest.fixture
def cluster(redis_cluster: ClusterSetup) -> ClusterSetup:
    """The session's cluster (this module only writes its own keys)."""
    return redis_cluster


async def _fill(redis: AsyncRedis, layout: QueueLayout, counts: list[int]) -> None:
    """Record the layout's partitions and add ``counts[i]`` entries to partition ``i``."""
    await prepare_partitions(redis, layout)
    for stream, count in zip(layout.streams, counts, strict=True):
        for index in range(count):
            await redis.xadd(stream, {"n": str(index)})


async def _queue_status(kubectl: KubeClient, name: str) -> dict[str, Any] | None:
    live = await kubectl.get(COURIER_GATEWAYS, NAMESPACE, name)
    queue = ((live or {}).get("status") or {}).get("queue")
    return live if queue else None


async def test_the_lag_is_read_through_sentinel_without_a_url(
    operator: Any, kubectl: KubeClient, redis_server: RedisServer, sentinel: SentinelSetup
) -> None:
    stream = f"sentinel-{uuid.uuid4().hex[:8]}"
    layout = QueueLayout(stream, 2)
    client = Sentinel(sentinel.sentinel_addresses()).master_for(sentinel.master_name)
    try:
        await _fill(client, layout, [6, 9])
        await operator()
        await create_gateway(
            kubectl,
            redis_server.url,
            "watched",
            redis={
                "mode": "sentinel",
                "sentinels": sentinel.sentinels_env().split(","),
                "sentinelMaster": sentinel.master_name,
                "stream": stream,
                "partitions": 2,
            },
            worker={"minReplicas": 1, "maxReplicas": 4, "targetLagPerReplica": 5},
        )
        live = await eventually(lambda: _queue_status(kubectl, "watched"))
        assert live["status"]["queue"]["lag"] == 15
        assert live["status"]["scaling"]["recommendedReplicas"] == 3
        # No Redis Secret is named, and none is missed.
        synced = condition(live, "SecretsSynced")
        assert synced is not None and synced["status"] == "True"
        worker = await kubectl.get(DEPLOYMENTS, NAMESPACE, "watched-worker")
        assert worker is not None
        (container,) = worker["spec"]["template"]["spec"]["containers"]
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert env["REDIS_SENTINELS"] == sentinel.sentinels_env()
        assert env["REDIS_SENTINEL_MASTER"] == sentinel.master_name
        assert "REDIS_URL" not in env
    finally:
        await client.delete(layout.registry, *layout.streams)
        await client.aclose()


async def test_the_lag_of_partitions_across_a_cluster_is_summed(
    operator: Any, kubectl: KubeClient, redis_server: RedisServer, cluster: ClusterSetup
) -> None:
    stream = f"cluster-{uuid.uuid4().hex[:8]}"
    layout = QueueLayout(stream, 3, tagged=True)
    client = RedisCluster.from_url(cluster.url)
    try:
        await client.initialize()
        # The partitions' hash tags put one on each primary.
        nodes = {client.get_node_from_key(name).name for name in layout.streams}
        assert len(nodes) == 3
        await _fill(client, layout, [4, 10, 7])
        await operator()
        await kubectl.create(SECRETS, NAMESPACE, secret("cluster-seed", url=cluster.url))
        await create_gateway(
            kubectl,
            redis_server.url,
            "spread",
            redis={
                "mode": "cluster",
                "urlSecretRef": {"name": "cluster-seed"},
                "stream": stream,
                "partitions": 3,
            },
        )
        live = await eventually(lambda: _queue_status(kubectl, "spread"))
        queue = live["status"]["queue"]
        assert (queue["lag"], queue["undelivered"], queue["pending"]) == (21, 21, 0)
    finally:
        await client.delete(layout.registry)
        for name in layout.streams:
            await client.delete(name)
        await client.aclose()
