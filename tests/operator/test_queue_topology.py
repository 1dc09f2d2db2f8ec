"""``spec.redis`` beyond one Redis: the topology and the layout reach every role, the CRD and the
operator refuse the same incomplete specs, and the scaler reads the lag of every partition.

- Every role the operator runs (ingress, worker, replay Job) is told ``REDIS_MODE``,
  ``REDIS_SENTINELS``/``REDIS_SENTINEL_MASTER`` (sentinel mode), ``QUEUE_STREAM``,
  ``QUEUE_PARTITIONS`` and ``ENQUEUE_MIN_REPLICAS``, and ``REDIS_URL`` from its Secret whenever one
  is named; the gateway's own settings accept that environment and lay the queue out the same way
  in every role.
- The CRD (schema and CEL rules, evaluated as the API server would) and the operator's spec
  model refuse the same specs with the same words: sentinel mode without sentinels, sentinels
  without sentinel mode, no URL Secret outside sentinel mode, bad addresses and bounds.
- The operator's Redis client is the gateway's topology (one client per mode, URL, sentinels and
  master), and a URL it cannot use is reported without echoing it.
- Against a real ``redis-server``: the lag the scaler acts on is the sum over every partition in
  the queue's registry (undelivered and pending entries), retries summed the same way.

The same, through a real Sentinel and a real Cluster: ``test_queue_topologies.py``.
"""

from __future__ import annotations

import uuid
from typing import Any

import jsonschema
import kopf
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import SentinelConnectionPool

from courier_gateway.config import ConfigError, Settings
from courier_gateway.queue.layout import QueueLayout, registry_key
from courier_gateway.queue.registry import CONSUMER_GROUP, ensure_consumer_group
from courier_gateway.queue.retry_schedule import retries_key
from courier_operator.context import OperatorContext, QueueAddress
from courier_operator.gateway.spec import InvalidSpecError, parse_gateway_spec
from courier_operator.gateway.workloads import ingress_deployment, worker_deployment
from courier_operator.kube import COURIER_GATEWAYS, DEPLOYMENTS, KubeClient
from courier_operator.replay.job import parse_replay_spec, replay_job
from tests.operator.conftest import NAMESPACE, condition, create_gateway
from tests.support.crds import validate_custom_resource
from tests.support.kube import eventually
from tests.support.servers import RedisServer

pytestmark = pytest.mark.timeout(60)

REDIS_URL = "rediss://courier:s3cret-pass@redis.internal:6380/2"
BASE: dict[str, Any] = {
    "image": "registry.example/courier-gateway:1.0.0",
    "mongo": {"uriSecretRef": {"name": "store"}},
    "signing": {"sources": [{"name": "dhl"}]},
}
GATEWAY = {
    "apiVersion": "gateway.courier.dev/v1alpha1",
    "kind": "CourierGateway",
    "metadata": {"name": "gw", "namespace": NAMESPACE, "uid": "u1"},
}
REQUEST = {
    "apiVersion": "gateway.courier.dev/v1alpha1",
    "kind": "ReplayRequest",
    "metadata": {"name": "again", "namespace": NAMESPACE, "uid": "r1"},
    "spec": {"gatewayRef": {"name": "gw"}, "selector": {"all": True}},
}

# spec.redis of each case, and the plain variables every role must get from it.
TOPOLOGIES: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "defaults": (
        {"urlSecretRef": {"name": "queue"}},
        {
            "REDIS_MODE": "standalone",
            "QUEUE_STREAM": "courier-events",
            "QUEUE_PARTITIONS": "1",
            "ENQUEUE_MIN_REPLICAS": "0",
        },
    ),
    "standalone partitioned": (
        {"urlSecretRef": {"name": "queue"}, "stream": "parcels", "partitions": 4},
        {
            "REDIS_MODE": "standalone",
            "QUEUE_STREAM": "parcels",
            "QUEUE_PARTITIONS": "4",
            "ENQUEUE_MIN_REPLICAS": "0",
        },
    ),
    "sentinel": (
        {
            "mode": "sentinel",
            "sentinels": ["sentinel-0.redis:26379", "sentinel-1.redis:26379", "[fd00::7]:26379"],
            "sentinelMaster": "courier-primary",
            "minReplicas": 1,
        },
        {
            "REDIS_MODE": "sentinel",
            "REDIS_SENTINELS": "sentinel-0.redis:26379,sentinel-1.redis:26379,[fd00::7]:26379",
            "REDIS_SENTINEL_MASTER": "courier-primary",
            "QUEUE_STREAM": "courier-events",
            "QUEUE_PARTITIONS": "1",
            "ENQUEUE_MIN_REPLICAS": "1",
        },
    ),
    "sentinel with credentials": (
        {
            "mode": "sentinel",
            "urlSecretRef": {"name": "queue", "key": "auth"},
            "sentinels": ["sentinel.redis:26379"],
            "partitions": 2,
            "minReplicas": 2,
        },
        {
            "REDIS_MODE": "sentinel",
            "REDIS_SENTINELS": "sentinel.redis:26379",
            "REDIS_SENTINEL_MASTER": "mymaster",
            "QUEUE_STREAM": "courier-events",
            "QUEUE_PARTITIONS": "2",
            "ENQUEUE_MIN_REPLICAS": "2",
        },
    ),
    "cluster": (
        {"mode": "cluster", "urlSecretRef": {"name": "queue"}, "partitions": 12, "minReplicas": 1},
        {
            "REDIS_MODE": "cluster",
            "QUEUE_STREAM": "courier-events",
            "QUEUE_PARTITIONS": "12",
            "ENQUEUE_MIN_REPLICAS": "1",
        },
    ),
}
QUEUE_VARIABLES = {
    "REDIS_MODE",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_MASTER",
    "QUEUE_STREAM",
    "QUEUE_PARTITIONS",
    "ENQUEUE_MIN_REPLICAS",
    "REDIS_URL",
}


def _manifest(redis: dict[str, Any]) -> dict[str, Any]:
    return {**GATEWAY, "metadata": {"name": "gw"}, "spec": {**BASE, "redis": redis}}


def _containers(redis: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The container of each role the operator runs for a gateway with this ``spec.redis``."""
    spec = parse_gateway_spec({**BASE, "redis": redis})
    gateway = {**GATEWAY, "spec": {**BASE, "redis": redis}}
    pods = {
        "ingress": ingress_deployment(gateway, spec)["spec"]["template"]["spec"],
        "worker": worker_deployment(gateway, spec, 1)["spec"]["template"]["spec"],
        "replay": replay_job(REQUEST, parse_replay_spec(REQUEST["spec"]), gateway, spec)["spec"][
            "template"
        ]["spec"],
    }
    return {role: pod["containers"][0] for role, pod in pods.items()}


def _environment(container: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet would give it (Secrets resolved)."""
    env: dict[str, str] = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        elif item["name"] == "REDIS_URL":
            env[item["name"]] = REDIS_URL
        elif item["name"] == "MONGO_URI":
            env[item["name"]] = "mongodb://store:27017/?replicaSet=rs0&w=majority"
    return env


@pytest.mark.parametrize("case", sorted(TOPOLOGIES))
def test_every_role_is_told_the_queue_topology(case: str) -> None:
    redis, expected = TOPOLOGIES[case]
    validate_custom_resource(_manifest(redis))  # the API server accepts it (schema and CEL)
    layouts = set()
    for role, container in _containers(redis).items():
        told = {
            item["name"]: item.get("value", item.get("valueFrom"))
            for item in container["env"]
            if item["name"] in QUEUE_VARIABLES
        }
        ref = redis.get("urlSecretRef")
        if ref is None:
            assert "REDIS_URL" not in told, role
        else:
            assert told.pop("REDIS_URL") == {
                "secretKeyRef": {"name": ref["name"], "key": ref.get("key", "url")}
            }, role
        assert told == expected, role
        # What the pod does with it: the gateway's own settings load and are complete.
        settings = Settings.from_env(_environment(container))
        settings.require_redis()
        assert settings.redis_mode == expected["REDIS_MODE"]
        assert settings.queue_partitions == int(expected["QUEUE_PARTITIONS"])
        assert settings.enqueue_min_replicas == int(expected["ENQUEUE_MIN_REPLICAS"])
        if settings.redis_mode == "sentinel":
            assert [f"{host}:{port}" for host, port in settings.sentinels] == [
                address.replace("[fd00::7]", "fd00::7") for address in redis["sentinels"]
            ]
        layouts.add(tuple(QueueLayout.from_settings(settings).streams))
    # The ingress writes, the worker reads and the replay re-enqueues the same partitions.
    assert len(layouts) == 1


# spec.redis refused by the CRD's CEL rules, and by the operator with the same words.
RULES: dict[str, tuple[dict[str, Any], str]] = {
    "sentinel mode without sentinels": (
        {"mode": "sentinel"},
        "sentinels are required when mode is sentinel",
    ),
    "sentinel mode with no sentinel": (
        {"mode": "sentinel", "sentinels": [], "urlSecretRef": {"name": "queue"}},
        "sentinels are required when mode is sentinel",
    ),
    "sentinels without sentinel mode": (
        {"urlSecretRef": {"name": "queue"}, "sentinels": ["sentinel.redis:26379"]},
        "sentinels are only used when mode is sentinel",
    ),
    "standalone without a URL": ({"stream": "parcels"}, "urlSecretRef is required unless mode"),
    "cluster without a URL": ({"mode": "cluster"}, "urlSecretRef is required unless mode"),
}


@pytest.mark.parametrize("case", sorted(RULES))
def test_the_crd_and_the_operator_refuse_an_incomplete_topology_alike(case: str) -> None:
    redis, message = RULES[case]
    with pytest.raises(jsonschema.ValidationError, match=message) as refused:
        validate_custom_resource(_manifest(redis))
    assert list(refused.value.path) == ["spec", "redis"]
    with pytest.raises(InvalidSpecError, match=f"^spec.redis: {message}"):
        parse_gateway_spec({**BASE, "redis": redis})


# Refused by the CRD's schema (bounds, enum, patterns) and by the operator's model.
BOUNDS: dict[str, dict[str, Any]] = {
    "unknown mode": {"mode": "replicated", "urlSecretRef": {"name": "queue"}},
    "no partition": {"urlSecretRef": {"name": "queue"}, "partitions": 0},
    "too many partitions": {"urlSecretRef": {"name": "queue"}, "partitions": 257},
    "negative replicas": {"urlSecretRef": {"name": "queue"}, "minReplicas": -1},
    "too many replicas": {"urlSecretRef": {"name": "queue"}, "minReplicas": 17},
    "sentinel without a port": {"mode": "sentinel", "sentinels": ["sentinel.redis"]},
    "sentinel on port 0": {"mode": "sentinel", "sentinels": ["sentinel.redis:0"]},
    "sentinel past the last port": {"mode": "sentinel", "sentinels": ["sentinel.redis:65536"]},
    "two sentinels in one item": {"mode": "sentinel", "sentinels": ["a:26379,b:26379"]},
    "a URL for a sentinel": {"mode": "sentinel", "sentinels": ["redis://sentinel:26379"]},
    "bad master name": {"mode": "sentinel", "sentinels": ["s:26379"], "sentinelMaster": "a b"},
    "too many sentinels": {"mode": "sentinel", "sentinels": [f"s{n}:26379" for n in range(17)]},
}


@pytest.mark.parametrize("case", sorted(BOUNDS))
def test_the_crd_and_the_operator_refuse_bad_values(case: str) -> None:
    redis = BOUNDS[case]
    with pytest.raises(jsonschema.ValidationError):
        validate_custom_resource(_manifest(redis))
    with pytest.raises(InvalidSpecError, match=r"^spec\.redis\."):
        parse_gateway_spec({**BASE, "redis": redis})


def test_a_port_at_the_edges_and_ipv6_are_accepted() -> None:
    redis = {"mode": "sentinel", "sentinels": ["s:1", "s:65535", "[::1]:26379", "10.0.0.7:26379"]}
    validate_custom_resource(_manifest(redis))
    parsed = parse_gateway_spec({**BASE, "redis": redis}).redis
    assert parsed.sentinels == redis["sentinels"]
    assert parsed.urlSecretRef is None


async def test_the_operators_client_is_the_gateways_topology(kube_api: Any) -> None:
    context = OperatorContext(
        client=KubeClient(kopf.ConnectionInfo(server=str(kube_api.url))),
        post_event=lambda *_: None,
    )
    try:
        standalone = context.redis(QueueAddress("standalone", "redis://127.0.0.1:6379/0"))
        assert type(standalone) is Redis
        # Gateways sharing a Redis share the client; another database is another client.
        assert context.redis(QueueAddress("standalone", "redis://127.0.0.1:6379/0")) is standalone
        assert context.redis(QueueAddress("standalone", "redis://127.0.0.1:6379/1")) is not (
            standalone
        )
        cluster = context.redis(QueueAddress("cluster", "redis://127.0.0.1:7000/0"))
        assert isinstance(cluster, RedisCluster)
        sentinel = context.redis(
            QueueAddress("sentinel", None, ("127.0.0.1:26379", "127.0.0.1:26380"), "cg")
        )
        assert isinstance(sentinel, Redis)
        pool = sentinel.connection_pool
        assert isinstance(pool, SentinelConnectionPool)
        assert pool.service_name == "cg"
        # Another master on the same sentinels is another client; the URL adds credentials.
        other = context.redis(QueueAddress("sentinel", None, ("127.0.0.1:26379",), "other"))
        assert other is not sentinel
        with_password = context.redis(
            QueueAddress("sentinel", "redis://:pw@ignored:1/3", ("127.0.0.1:26379",), "cg")
        )
        kwargs = with_password.connection_pool.connection_kwargs
        assert (kwargs["password"], kwargs["db"]) == ("pw", 3)

        # A URL that cannot work is named, its text (and password) never shown.
        with pytest.raises(ConfigError, match=r"^REDIS_URL: expected a URL") as refused:
            context.redis(QueueAddress("standalone", "http://courier:hunter22@redis:6379"))
        assert "hunter22" not in str(refused.value)
        with pytest.raises(ConfigError, match=r"^REDIS_URL: a Redis Cluster is reached over TCP"):
            context.redis(QueueAddress("cluster", "unix:///run/redis.sock"))
        with pytest.raises(ConfigError, match=r"^REDIS_URL: is required"):
            context.redis(QueueAddress("standalone", None))
    finally:
        await context.aclose()


async def test_a_sentinel_spec_without_sentinels_is_reported_not_run(
    operator: Any, kubectl: KubeClient, redis_server: RedisServer
) -> None:
    """An object that skipped the CRD's rules (written before the CRD upgrade, say)."""
    await operator()
    await create_gateway(kubectl, redis_server.url, "nosentinels", redis={"mode": "sentinel"})

    async def reported() -> dict[str, Any] | None:
        return condition(await kubectl.get(COURIER_GATEWAYS, NAMESPACE, "nosentinels"), "Ready")

    ready = await eventually(reported)
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"] == "spec.redis: sentinels are required when mode is sentinel"
    assert await kubectl.get(DEPLOYMENTS, NAMESPACE, "nosentinels-worker") is None


async def test_the_scaler_sums_the_lag_of_every_partition(
    operator: Any, kubectl: KubeClient, redis_server: RedisServer
) -> None:
    stream = f"parts-{uuid.uuid4().hex[:8]}"
    # Two partitions as the ingress names them on one Redis, plus one a previous partition
    # count left behind: recorded in the registry, so still drained, and still counted.
    layout = QueueLayout(stream, 2)
    streams = [*layout.streams, f"{{{stream}:old}}"]
    redis = Redis.from_url(redis_server.url)
    try:
        await redis.sadd(registry_key(stream), *streams)
        for partition in streams:
            await ensure_consumer_group(redis, partition)
        for partition, count in zip(streams, (12, 7, 4), strict=True):
            for index in range(count):
                await redis.xadd(partition, {"n": str(index)})
        # Five of the first partition's entries delivered to a worker, not yet acknowledged:
        # pending, still lag. Retries waiting in two partitions' schedules.
        await redis.xreadgroup(CONSUMER_GROUP, "worker-a", {streams[0]: ">"}, count=5)
        await redis.zadd(retries_key(streams[1]), {"r1": 1, "r2": 2})
        await redis.zadd(retries_key(streams[2]), {"r3": 3})
        # The unpartitioned stream of the same name is not a partition of this queue.
        await ensure_consumer_group(redis, stream)
        await redis.xadd(stream, {"n": "ignored"})

        await operator()
        await create_gateway(
            kubectl,
            redis_server.url,
            "partitioned",
            redis={"urlSecretRef": {"name": "queue"}, "stream": stream, "partitions": 2},
            worker={"minReplicas": 1, "maxReplicas": 5, "targetLagPerReplica": 10},
        )

        async def observed() -> dict[str, Any] | None:
            live = await kubectl.get(COURIER_GATEWAYS, NAMESPACE, "partitioned")
            return live if (live or {}).get("status", {}).get("queue") else None

        live = await eventually(observed)
        queue = live["status"]["queue"]
        assert (queue["undelivered"], queue["pending"]) == (12 - 5 + 7 + 4, 5)
        assert queue["lag"] == 12 + 7 + 4
        assert queue["retriesScheduled"] == 3
        assert live["status"]["scaling"]["recommendedReplicas"] == 3  # ceil(23 / 10)
        worker = await eventually(lambda: kubectl.get(DEPLOYMENTS, NAMESPACE, "partitioned-worker"))
        (container,) = worker["spec"]["template"]["spec"]["containers"]
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert (env["QUEUE_STREAM"], env["QUEUE_PARTITIONS"]) == (stream, "2")

        async def scaled() -> bool:
            deployment = await kubectl.get(DEPLOYMENTS, NAMESPACE, "partitioned-worker")
            return deployment is not None and deployment["spec"]["replicas"] == 3

        assert await eventually(scaled)
    finally:
        await redis.delete(registry_key(stream), stream, *streams)
        await redis.delete(*(retries_key(name) for name in streams))
        await redis.aclose()
