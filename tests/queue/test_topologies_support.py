"""The Sentinel and Cluster topologies of ``tests/support/topologies.py`` really fail over.

Against real ``redis-server`` processes (no mocks):

- Sentinel: a key written and confirmed by ``WAIT 1`` on the primary survives a SIGKILL of the
  primary; the sentinels promote the replica within seconds, a ``redis.sentinel.Sentinel``
  client finds the new primary and reads the key there, and the killed node rejoins as a
  replica of the new primary.
- Cluster: keys in slots of all three primaries, each confirmed by ``WAIT 1`` on the
  connection that wrote it, survive a SIGKILL of one primary; its replica takes over, every
  key is readable through ``redis.cluster.RedisCluster``, and the killed node rejoins as a
  replica of its successor.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis
import redis.cluster
import redis.sentinel
from redis.crc import key_slot

from tests.support.topologies import ClusterSetup, SentinelSetup, cluster_setup, sentinel_setup

pytestmark = pytest.mark.serial

#: A promotion takes 2-5 s with a 1 s down-after / node timeout; this is a generous bound.
FAILOVER_BOUND_SECONDS = 15.0


@pytest.fixture(scope="module")
def sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    with sentinel_setup(tmp_path_factory.mktemp("sentinel")) as setup:
        yield setup


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSetup]:
    with cluster_setup(tmp_path_factory.mktemp("cluster")) as setup:
        yield setup


def node_of(client: redis.cluster.RedisCluster, key: str) -> redis.cluster.ClusterNode:
    """The primary that owns ``key``'s slot, as ``client`` knows it."""
    node: redis.cluster.ClusterNode = client.get_node_from_key(key)  # type: ignore[no-untyped-call]
    return node


def test_sentinel_promotes_the_replica_and_keeps_acknowledged_writes(
    sentinel: SentinelSetup,
) -> None:
    hosts = sentinel.sentinels_env().split(",")
    assert len(hosts) == 3
    assert all(host.startswith("127.0.0.1:") for host in hosts)
    old_port = sentinel.primary_port()
    with sentinel.node(old_port).client() as primary, primary.pipeline(transaction=False) as pipe:
        pipe.set("acked", "before-failover")
        pipe.execute_command("WAIT", 1, 1000)
        assert pipe.execute() == [True, 1]

    started = time.monotonic()
    assert sentinel.kill_primary() == old_port
    new_port = sentinel.wait_promoted(old_port, timeout=FAILOVER_BOUND_SECONDS)
    assert new_port != old_port
    assert time.monotonic() - started < FAILOVER_BOUND_SECONDS

    sentinels = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        sentinel.sentinel_addresses(), socket_timeout=1.0
    )
    client: redis.Redis = sentinels.master_for(  # type: ignore[no-untyped-call]
        sentinel.master_name, socket_timeout=1.0, decode_responses=True
    )
    assert client.get("acked") == "before-failover"
    assert client.info("server")["tcp_port"] == new_port
    client.set("after", "failover")

    assert sentinel.restart_killed_as_replica() == old_port
    assert sentinel.primary_port() == new_port
    role = sentinel.node(old_port).role()
    assert role[:4] == ["slave", "127.0.0.1", new_port, "connected"]
    client.close()


def test_cluster_fails_over_and_keeps_acknowledged_writes(cluster: ClusterSetup) -> None:
    cluster.flush()
    primaries = cluster.primaries()
    assert len(primaries) == 3
    assert len({cluster.replica_of(port) for port in primaries}) == 3

    client = redis.cluster.RedisCluster.from_url(cluster.url, decode_responses=True)
    keys = [f"{{tag-{index}}}:event" for index in range(12)]
    owners = {key: node_of(client, key).port for key in keys}
    assert set(owners.values()) == set(primaries), "the keys should cover every primary"
    for key in keys:
        # WAIT counts the writes of its own connection: send both on one node connection.
        node = node_of(client, key)
        with client.get_redis_connection(node).pipeline(transaction=False) as pipe:
            pipe.set(key, key_slot(key.encode()))
            pipe.execute_command("WAIT", 1, 1000)  # type: ignore[no-untyped-call]
            assert pipe.execute() == [True, 1]
    client.close()

    victim = owners[keys[0]]
    replica = cluster.replica_of(victim)
    started = time.monotonic()
    cluster.kill_node(victim)
    assert cluster.wait_failover(victim, timeout=FAILOVER_BOUND_SECONDS) == replica
    assert time.monotonic() - started < FAILOVER_BOUND_SECONDS
    assert victim not in cluster.primaries()
    assert replica in cluster.primaries()

    survivor = redis.cluster.RedisCluster.from_url(cluster.url, decode_responses=True)
    assert node_of(survivor, keys[0]).port == replica
    assert {key: survivor.get(key) for key in keys} == {
        key: str(key_slot(key.encode())) for key in keys
    }
    survivor.close()

    cluster.restart_node(victim)
    assert cluster.replica_of(replica) == victim
    assert sorted(cluster.primaries()) == sorted({*primaries, replica} - {victim})
    cluster.flush()
