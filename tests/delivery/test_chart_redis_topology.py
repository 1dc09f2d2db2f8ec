"""The chart's ``gateway.redis`` topology values, and the production example.

- ``gateway.redis.mode``, ``sentinels``, ``sentinelMaster``, ``partitions`` and ``minReplicas``
  are rendered into the CourierGateway, which the CRD (schema and CEL rules) and the operator
  accept, and the operator then tells the gateway pods; in sentinel mode the Redis Secret is
  optional and left out when none is given.
- What the CRD's rules would refuse is refused at render time with a message naming the values,
  and the values schema refuses bad modes, bounds and sentinel addresses at install.
- ``k8s/production-values.yaml`` installs a Redis Cluster queue in partitions, confirmed by a
  replica per event, and a MongoDB replica set written with majority write concern; the Secrets
  its instructions create are the ones its values name, with URLs the gateway accepts, and its
  commented Sentinel alternative renders as well.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import helm_python as helm
import pytest
import yaml

from courier_gateway.config import Settings
from courier_operator.gateway.spec import parse_gateway_spec
from tests.delivery.conftest import (
    PRODUCTION_VALUES,
    Render,
    Rendered,
    operator_objects,
    production_values,
)
from tests.support.crds import validate_custom_resource

MONGO = {"mongo": {"existingSecret": "courier-mongo"}}
SENTINELS = ["redis-node-0.redis:26379", "redis-node-1.redis:26379", "redis-node-2.redis:26379"]


def _gateway(rendered: Rendered) -> dict[str, Any]:
    gateway = rendered.one("CourierGateway")
    validate_custom_resource(gateway)  # schema and CEL rules, as the API server checks them
    return gateway


def _worker_env(rendered: Rendered) -> dict[str, Any]:
    worker = operator_objects(rendered)[1]
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # values, and the spec.redis rendered from them.
    "defaults": (
        {"redis": {"existingSecret": "courier-redis"}},
        {
            "mode": "standalone",
            "urlSecretRef": {"name": "courier-redis", "key": "url"},
            "stream": "courier-events",
            "partitions": 1,
            "minReplicas": 0,
        },
    ),
    "standalone in partitions": (
        {
            "redis": {"existingSecret": "courier-redis"},
            "gateway": {"redis": {"partitions": 4, "minReplicas": 1, "stream": "parcels"}},
        },
        {
            "mode": "standalone",
            "urlSecretRef": {"name": "courier-redis", "key": "url"},
            "stream": "parcels",
            "partitions": 4,
            "minReplicas": 1,
        },
    ),
    "sentinel without a Secret": (
        {"gateway": {"redis": {"mode": "sentinel", "sentinels": SENTINELS}}},
        {
            "mode": "sentinel",
            "sentinels": SENTINELS,
            "sentinelMaster": "mymaster",
            "stream": "courier-events",
            "partitions": 1,
            "minReplicas": 0,
        },
    ),
    "sentinel with credentials": (
        {
            "redis": {"existingSecret": "redis-auth", "existingSecretKey": "credentials"},
            "gateway": {
                "redis": {
                    "mode": "sentinel",
                    "sentinels": SENTINELS[:1],
                    "sentinelMaster": "courier",
                    "minReplicas": 1,
                }
            },
        },
        {
            "mode": "sentinel",
            "urlSecretRef": {"name": "redis-auth", "key": "credentials"},
            "sentinels": SENTINELS[:1],
            "sentinelMaster": "courier",
            "stream": "courier-events",
            "partitions": 1,
            "minReplicas": 1,
        },
    ),
    "cluster": (
        {
            "redis": {"existingSecret": "courier-redis"},
            "gateway": {"redis": {"mode": "cluster", "partitions": 12, "minReplicas": 1}},
        },
        {
            "mode": "cluster",
            "urlSecretRef": {"name": "courier-redis", "key": "url"},
            "stream": "courier-events",
            "partitions": 12,
            "minReplicas": 1,
        },
    ),
}


def _values(extra: dict[str, Any]) -> dict[str, Any]:
    gateway = {"enabled": True, **extra.get("gateway", {})}
    return {**MONGO, **extra, "gateway": gateway}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_topology_reaches_the_gateway_and_its_pods(render: Render, case: str) -> None:
    values, expected = CASES[case]
    rendered = render(_values(values))
    spec = _gateway(rendered)["spec"]
    assert spec["redis"] == expected
    parsed = parse_gateway_spec(spec).redis
    assert (parsed.mode, parsed.partitions, parsed.minReplicas) == (
        expected["mode"],
        expected["partitions"],
        expected["minReplicas"],
    )
    env = _worker_env(rendered)
    assert env["REDIS_MODE"] == expected["mode"]
    assert env["QUEUE_PARTITIONS"] == str(expected["partitions"])
    assert env["ENQUEUE_MIN_REPLICAS"] == str(expected["minReplicas"])
    if expected["mode"] == "sentinel":
        assert env["REDIS_SENTINELS"] == ",".join(expected["sentinels"])
        assert env["REDIS_SENTINEL_MASTER"] == expected["sentinelMaster"]
    else:
        assert "REDIS_SENTINELS" not in env
    if "urlSecretRef" in expected:
        assert env["REDIS_URL"] == {"secretKeyRef": expected["urlSecretRef"]}
    else:
        assert "REDIS_URL" not in env


REFUSED_AT_RENDER: dict[str, dict[str, Any]] = {
    "gateway.redis.sentinels are required when gateway.redis.mode is sentinel": {
        "redis": {"existingSecret": "courier-redis"},
        "gateway": {"redis": {"mode": "sentinel"}},
    },
    "gateway.redis.sentinels are only used when gateway.redis.mode is sentinel": {
        "redis": {"existingSecret": "courier-redis"},
        "gateway": {"redis": {"sentinels": SENTINELS}},
    },
    "gateway.enabled needs a Redis": {"gateway": {"redis": {"mode": "cluster"}}},
    "redis.inCluster is one standalone Redis: gateway.redis.mode must be standalone": {
        "redis": {"inCluster": {"enabled": True}},
        "gateway": {"redis": {"mode": "cluster"}},
    },
    "redis.inCluster has no replicas: gateway.redis.minReplicas must be 0": {
        "redis": {"inCluster": {"enabled": True}},
        "gateway": {"redis": {"minReplicas": 1}},
    },
}


@pytest.mark.parametrize("message", sorted(REFUSED_AT_RENDER))
def test_what_the_crd_would_refuse_fails_the_render(render: Render, message: str) -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape(message)):
        render(_values(REFUSED_AT_RENDER[message]))


REFUSED_BY_THE_SCHEMA: dict[str, dict[str, Any]] = {
    "unknown mode": {"mode": "replicated"},
    "no partition": {"partitions": 0},
    "too many partitions": {"partitions": 257},
    "negative replicas": {"minReplicas": -1},
    "too many replicas": {"minReplicas": 17},
    "partitions as text": {"partitions": "4"},
    "sentinels as one string": {"sentinels": "a:26379,b:26379"},
    "sentinel without a port": {"sentinels": ["redis-node-0.redis"]},
    "sentinel as a URL": {"sentinels": ["redis://redis-node-0.redis:26379"]},
    "master with a space": {"sentinelMaster": "my master"},
    "unknown key": {"sentinel": ["a:26379"]},
}


@pytest.mark.parametrize("case", sorted(REFUSED_BY_THE_SCHEMA))
def test_the_schema_refuses_bad_topology_values(chart: helm.Chart, case: str) -> None:
    values = {"gateway": {"redis": REFUSED_BY_THE_SCHEMA[case]}}
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)


def _instructions() -> dict[str, tuple[str, str, str]]:
    """The ``kubectl create secret`` commands of the file's header: name -> (Secret, key, URL)."""
    header = "\n".join(
        line.removeprefix("#").strip()
        for line in PRODUCTION_VALUES.read_text().splitlines()
        if line.startswith("#")
    ).replace("\\\n", " ")
    found = re.findall(r"create secret generic (\S+)\s+--from-literal=([\w.-]+)='([^']+)'", header)
    return {key: (secret, key, url) for secret, key, url in found}


def test_the_production_example_is_durable_end_to_end(chart: helm.Chart, render: Render) -> None:
    values = production_values()
    chart.validate_schema(values)
    rendered = render(values)
    spec = parse_gateway_spec(_gateway(rendered)["spec"])
    redis = spec.redis
    # A topology that survives the loss of a primary, the queue spread over partitions, and
    # every accepted event on a replica before the 202.
    assert redis.mode in ("sentinel", "cluster")
    assert redis.partitions > 1
    assert redis.minReplicas == 1
    assert spec.ingress.replicas >= 2
    assert spec.worker.minReplicas >= 2

    commands = _instructions()
    secret, key, redis_url = commands["url"]
    assert redis.urlSecretRef is not None
    assert (redis.urlSecretRef.name, redis.urlSecretRef.key) == (secret, key)
    secret, key, mongo_uri = commands["uri"]
    assert (spec.mongo.uriSecretRef.name, spec.mongo.uriSecretRef.key) == (secret, key)
    # Majority writes to a replica set, journaled: what docs/deploy.md asks of production.
    options = parse_qs(urlsplit(mongo_uri).query)
    assert options == {"replicaSet": ["rs0"], "w": ["majority"], "journal": ["true"]}
    assert len(urlsplit(mongo_uri).netloc.split("@", 1)[1].split(",")) == 3
    # The gateway accepts both URLs with the rendered settings.
    env = _worker_env(rendered)
    settings = Settings.from_env(
        {
            **{name: value for name, value in env.items() if isinstance(value, str)},
            "REDIS_URL": redis_url,
            "MONGO_URI": mongo_uri,
        }
    )
    settings.require_redis()
    settings.require("MONGO_URI")
    if settings.redis_mode == "cluster":
        assert urlsplit(redis_url).path in ("", "/0")  # a cluster has database 0 only


def test_the_sentinel_alternative_of_the_production_example_renders(render: Render) -> None:
    # The commented block under gateway.redis, uncommented in place of the cluster settings.
    lines = PRODUCTION_VALUES.read_text().splitlines()
    block = [line[len("    #   ") :] for line in lines if line.startswith("    #   ")]
    alternative = yaml.safe_load("\n".join(block))
    assert alternative["mode"] == "sentinel"
    values = production_values()
    values["gateway"]["redis"] = {
        **{k: v for k, v in values["gateway"]["redis"].items() if k not in alternative},
        **alternative,
        "mode": "sentinel",
    }
    spec = parse_gateway_spec(_gateway(render(values))["spec"]).redis
    assert spec.mode == "sentinel"
    assert len(spec.sentinels) == 3
    assert spec.minReplicas == 1
