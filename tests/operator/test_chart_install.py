"""The chart's operator, with the chart's settings and RBAC, reconciles the chart's gateway.

The chart is rendered offline with the kind development values; what an install would put in
the cluster for the operator to read (the CourierGateway, the store Secrets, the peering object)
is applied to the emulated API; the operator starts with the environment of the chart's operator
Deployment (peering included). It must create the gateway's workloads, and every request it made
must be allowed by the chart's ClusterRole, not merely by the operator's own declaration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import kmock
import pytest
import yaml

from courier_operator.kube import COURIER_GATEWAYS, DEPLOYMENTS, SECRETS, KubeClient
from tests.operator.conftest import NAMESPACE, condition, operator_requests
from tests.support.kube import eventually
from tests.support.servers import RedisServer

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]


def _render() -> list[dict[str, Any]]:
    values = yaml.safe_load((ROOT / "k8s" / "dev-values.yaml").read_text())
    with helm.Chart.load(ROOT / "charts" / "courier-gateway") as chart:
        manifests = chart.render(
            values, name="courier-gateway", namespace=NAMESPACE, is_install=True
        )
    return [
        doc
        for template, text in sorted(manifests.items())
        if not template.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def _rule_allows(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
        for rule in rules
    )


async def test_the_chart_operator_reconciles_the_chart_gateway(
    operator: Any, kube_api: Any, kubectl: KubeClient, redis_server: RedisServer
) -> None:
    objects = _render()
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in objects:
        by_kind.setdefault(doc["kind"], []).append(doc)
    (deployment,) = [
        d for d in by_kind["Deployment"] if d["metadata"]["name"].endswith("-operator")
    ]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["operator"]
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}

    kube_api.resources["kopf.dev/v1/clusterkopfpeerings"] = kmock.ResourceInfo(
        kind="ClusterKopfPeering", namespaced=False, verbs={"list", "watch", "get", "patch"}
    )
    (peering,) = by_kind["ClusterKopfPeering"]
    assert peering["metadata"]["name"] == env["OPERATOR_PEERING"]
    kube_api.objects["kopf.dev/v1/clusterkopfpeerings", None, peering["metadata"]["name"]] = peering
    for secret in by_kind["Secret"]:
        if secret["metadata"]["name"].endswith("-redis"):
            # The in-cluster Redis of the dev values is this test's Redis.
            secret = {**secret, "stringData": {"url": redis_server.url}}
        await kubectl.create(SECRETS, NAMESPACE, secret)
    (gateway,) = by_kind["CourierGateway"]
    await kubectl.create(COURIER_GATEWAYS, NAMESPACE, gateway)

    settings = {name: value for name, value in env.items() if name.startswith("OPERATOR_")}
    settings["OPERATOR_HEALTH_PORT"] = "0"  # the test runs several operators on one host
    await operator(**settings)
    name = gateway["metadata"]["name"]

    async def reconciled() -> dict[str, Any] | None:
        live = await kubectl.get(COURIER_GATEWAYS, NAMESPACE, name)
        synced = condition(live, "SecretsSynced")
        return live if synced and condition(live, "Scaled") else None

    live = await eventually(reconciled, timeout=20)
    assert condition(live, "SecretsSynced")["status"] == "True"
    assert condition(live, "Scaled")["reason"] == "Steady"
    for component in ("ingress", "worker"):
        created = await kubectl.get(DEPLOYMENTS, NAMESPACE, f"{name}-{component}")
        assert created is not None
        (pod_container,) = created["spec"]["template"]["spec"]["containers"]
        assert pod_container["image"] == gateway["spec"]["image"]

    (role,) = [
        doc
        for doc in by_kind["ClusterRole"]
        if doc["metadata"]["labels"]["app.kubernetes.io/component"] == "operator"
    ]
    made = set(operator_requests(kube_api))
    assert ("kopf.dev", "clusterkopfpeerings", "patch") in made  # peering really ran
    denied = sorted(request for request in made if not _rule_allows(role["rules"], *request))
    assert denied == []
