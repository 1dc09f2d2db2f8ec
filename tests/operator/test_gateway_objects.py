"""A CourierGateway's owned objects: created as specified, updated with the spec, drift undone.

The operator is kopf with the production handlers against the emulated API (see conftest).
"""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from courier_operator.context import OperatorContext
from courier_operator.gateway.reconcile import reconcile
from courier_operator.kube import (
    CONFIGMAPS,
    COURIER_GATEWAYS,
    DEPLOYMENTS,
    POD_DISRUPTION_BUDGETS,
    SECRETS,
    SERVICES,
    KubeClient,
)
from tests.operator.conftest import NAMESPACE, condition, create_gateway
from tests.support.kube import eventually
from tests.support.servers import RedisServer

pytestmark = pytest.mark.timeout(60)


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


async def _objects(kubectl: KubeClient, name: str) -> dict[str, Any] | None:
    found = {
        "ingress": await kubectl.get(DEPLOYMENTS, NAMESPACE, f"{name}-ingress"),
        "worker": await kubectl.get(DEPLOYMENTS, NAMESPACE, f"{name}-worker"),
        "service": await kubectl.get(SERVICES, NAMESPACE, name),
        "pdb": await kubectl.get(POD_DISRUPTION_BUDGETS, NAMESPACE, f"{name}-ingress"),
        "config": await kubectl.get(CONFIGMAPS, NAMESPACE, f"{name}-sources"),
        "dhl": await kubectl.get(SECRETS, NAMESPACE, f"{name}-source-dhl"),
        "fedex": await kubectl.get(SECRETS, NAMESPACE, f"{name}-source-fedex"),
    }
    return found if all(found.values()) else None


async def test_creating_a_gateway_creates_its_owned_objects(
    operator: Any, kubectl: KubeClient, redis_server: RedisServer
) -> None:
    await operator()
    gateway = await create_gateway(kubectl, redis_server.url, "main")
    objects = await eventually(lambda: _objects(kubectl, "main"))

    uid = gateway["metadata"]["uid"]
    for obj in objects.values():
        (owner,) = obj["metadata"]["ownerReferences"]
        assert owner == {
            "apiVersion": "gateway.courier.dev/v1alpha1",
            "kind": "CourierGateway",
            "name": "main",
            "uid": uid,
            "controller": True,
        }

    ingress = objects["ingress"]["spec"]
    pod = ingress["template"]["spec"]
    (container,) = pod["containers"]
    assert ingress["replicas"] == 2  # the CRD's default, applied by the operator too
    assert (
        ingress["selector"]["matchLabels"].items()
        <= ingress["template"]["metadata"]["labels"].items()
    )
    assert container["image"] == "registry.example/courier-gateway:1.0.0"
    assert container["args"] == ["ingress"]
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/ready",
        "port": "http",
        "scheme": "HTTP",
    }
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    env = _env(container)
    assert env["REDIS_URL"] == {"secretKeyRef": {"name": "queue", "key": "url"}}
    assert env["SOURCES_FILE"] == "/etc/courier-gateway/config/sources.yaml"
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    for source in ("dhl", "fedex"):
        volume = volumes[mounts[f"/etc/courier-gateway/sources/{source}"]]
        assert volume["secret"] == {"secretName": f"main-source-{source}"}
    assert (
        "secretsDir: /etc/courier-gateway/sources/dhl" in objects["config"]["data"]["sources.yaml"]
    )
    assert "scheme: standard-webhooks" in objects["config"]["data"]["sources.yaml"]

    worker = objects["worker"]["spec"]
    (worker_container,) = worker["template"]["spec"]["containers"]
    assert worker["replicas"] == 1  # minReplicas until the scaler says otherwise
    assert worker_container["args"] == ["worker"]
    worker_env = _env(worker_container)
    assert worker_env["MONGO_URI"] == {"secretKeyRef": {"name": "store", "key": "uri"}}
    assert worker_env["WORKER_CONCURRENCY"] == "10"
    assert worker_container["readinessProbe"]["httpGet"]["port"] == "metrics"

    service = objects["service"]["spec"]
    assert service["selector"].items() <= ingress["template"]["metadata"]["labels"].items()
    assert service["ports"] == [
        {"name": "http", "port": 3000, "targetPort": "http", "protocol": "TCP"}
    ]
    assert objects["pdb"]["spec"]["selector"]["matchLabels"] == ingress["selector"]["matchLabels"]

    # Standard Webhooks keys are whsec_ + base64; v1 keys are plain text.
    import base64

    (dhl_key,) = objects["dhl"]["data"].values()
    assert base64.b64decode(dhl_key).decode().startswith("whsec_")

    async def status_reported() -> dict[str, Any] | None:
        live = await kubectl.get(COURIER_GATEWAYS, NAMESPACE, "main")
        return live if condition(live, "SecretsSynced") and condition(live, "Scaled") else None

    live = await eventually(status_reported)
    status = live["status"]
    assert status["observedGeneration"] == 1
    assert condition(live, "SecretsSynced")["status"] == "True"
    # No controller runs pods in the emulator: not ready, and the condition says why.
    ready = condition(live, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "IngressNotReady")
    assert condition(live, "Progressing")["status"] == "True"
    assert status["ingress"] == {"desiredReplicas": 2, "readyReplicas": 0, "summary": "0/2"}
    assert {source["name"] for source in status["signing"]["sources"]} == {"dhl", "fedex"}
    assert status["signing"]["activeKeyId"] in objects["dhl"]["data"]


async def test_pods_becoming_ready_make_the_gateway_ready(
    operator: Any, kubectl: KubeClient, redis_server: RedisServer
) -> None:
    await operator()
    await create_gateway(kubectl, redis_server.url, "ready")
    await eventually(lambda: _objects(kubectl, "ready"))
    # What the Deployment controller would write once the pods pass their readiness probes.
    for component, replicas in (("ingress", 2), ("worker", 1)):
        live = await kubectl.get(DEPLOYMENTS, NAMESPACE, f"ready-{component}")
        assert live is not None
        ready = {
            "replicas": replicas,
            "readyReplicas": replicas,
            "updatedReplicas": replicas,
            "availableReplicas": replicas,
            "observedGeneration": live["metadata"]["generation"],
        }
        await kubectl.merge_patch(
            DEPLOYMENTS, NAMESPACE, f"ready-{component}", {"status": ready}, subresource="status"
        )

    async def ready() -> dict[str, Any] | None:
        live = await kubectl.get(COURIER_GATEWAYS, NAMESPACE, "ready")
        found = condition(live, "Ready")
        return live if found and found["status"] == "True" else None

    live = await eventually(ready)
    assert condition(live, "Progressing")["status"] == "False"
    assert live["status"]["worker"]["summary"] == "1/1"


async def test_spec_changes_reach_the_owned_objects(
    operator: Any, kubectl: KubeClient, redis_server: RedisServer
) -> None:
    await operator()
    await create_gateway(kubectl, redis_server.url, "change")
    await eventually(lambda: _objects(kubectl, "change"))

    patch = {
        "spec": {
            "image": "registry.example/courier-gateway:1.1.0",
            "ingress": {"replicas": 3},
            "worker": {"minReplicas": 2, "maxReplicas": 4, "concurrency": 25},
        }
    }
    await kubectl.merge_patch(COURIER_GATEWAYS, NAMESPACE, "change", patch)

    async def updated() -> tuple[dict[str, Any], dict[str, Any]] | None:
        ingress = await kubectl.get(DEPLOYMENTS, NAMESPACE, "change-ingress")
        worker = await kubectl.get(DEPLOYMENTS, NAMESPACE, "change-worker")
        assert ingress and worker
        (worker_container,) = worker["spec"]["template"]["spec"]["containers"]
        done = (
            ingress["spec"]["replicas"] == 3
            and worker["spec"]["replicas"] == 2
            and _env(worker_container)["WORKER_CONCURRENCY"] == "25"
            and worker_container["image"].endswith(":1.1.0")
        )
        return (ingress, worker) if done else None

    ingress, _ = await eventually(updated)
    assert ingress["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":1.1.0")

    async def observed() -> bool:
        live = await kubectl.get(COURIER_GATEWAYS, NAMESPACE, "change")
        return bool(
            live and live["status"].get("observedGeneration") == live["metadata"]["generation"] == 2
        )

    await eventually(observed)


async def test_hand_edits_to_a_deployment_are_reverted(
    operator: Any, kubectl: KubeClient, redis_server: RedisServer
) -> None:
    await operator()
    await create_gateway(kubectl, redis_server.url, "drift")
    objects = await eventually(lambda: _objects(kubectl, "drift"))
    original = objects["ingress"]["spec"]["template"]["spec"]["containers"][0]["image"]

    edited = objects["ingress"]["spec"]["template"]["spec"]["containers"][0] | {
        "image": "evil:latest"
    }
    await kubectl.merge_patch(
        DEPLOYMENTS,
        NAMESPACE,
        "drift-ingress",
        {"spec": {"replicas": 7, "template": {"spec": {"containers": [edited]}}}},
    )

    async def restored() -> bool:
        live = await kubectl.get(DEPLOYMENTS, NAMESPACE, "drift-ingress")
        assert live
        return bool(
            live["spec"]["replicas"] == 2
            and live["spec"]["template"]["spec"]["containers"][0]["image"] == original
        )

    await eventually(restored)


async def test_reconciling_twice_changes_nothing(
    kube_api: Any, kubectl: KubeClient, redis_server: RedisServer
) -> None:
    """The handler body run directly, twice: the second run writes nothing at all."""
    await create_gateway(kubectl, redis_server.url, "twice")
    events: list[tuple[str, str]] = []
    context = OperatorContext(
        client=KubeClient(kopf.ConnectionInfo(server=str(kube_api.url))),
        post_event=lambda _body, _type, reason, message: events.append((reason, message)),
    )
    try:
        await reconcile(context, NAMESPACE, "twice", observe_queue=True)
        first = await _objects(kubectl, "twice")
        assert first is not None
        writes_before = len(kube_api["patch"]) + len(kube_api["post"]) + len(kube_api["delete"])

        await reconcile(context, NAMESPACE, "twice", observe_queue=False)

        writes_after = len(kube_api["patch"]) + len(kube_api["post"]) + len(kube_api["delete"])
        assert writes_after == writes_before
        assert await _objects(kubectl, "twice") == first
        assert [reason for reason, _ in events] == ["KeyCreated", "KeyCreated"]
    finally:
        await context.aclose()


async def test_an_invalid_spec_is_reported_not_crashed_on(
    operator: Any, kubectl: KubeClient, redis_server: RedisServer
) -> None:
    await operator()
    await create_gateway(
        kubectl, redis_server.url, "bad", worker={"minReplicas": 5, "maxReplicas": 2}
    )

    async def reported() -> dict[str, Any] | None:
        return condition(await kubectl.get(COURIER_GATEWAYS, NAMESPACE, "bad"), "Ready")

    ready = await eventually(reported)
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "minReplicas must not exceed maxReplicas" in ready["message"]
    assert await kubectl.get(DEPLOYMENTS, NAMESPACE, "bad-ingress") is None


async def test_a_missing_connection_secret_is_named_in_the_status(
    operator: Any, kubectl: KubeClient, redis_server: RedisServer
) -> None:
    await operator()
    await create_gateway(
        kubectl, redis_server.url, "nosecret", redis={"urlSecretRef": {"name": "absent"}}
    )

    async def reported() -> dict[str, Any] | None:
        found = condition(
            await kubectl.get(COURIER_GATEWAYS, NAMESPACE, "nosecret"), "SecretsSynced"
        )
        return found if found and found["status"] == "False" else None

    synced = await eventually(reported)
    assert synced["message"] == "Secret absent not found"


async def test_a_name_that_cannot_name_a_service_is_reported(
    operator: Any, kubectl: KubeClient, redis_server: RedisServer
) -> None:
    await operator()
    await create_gateway(kubectl, redis_server.url, "1st-gateway")

    async def reported() -> dict[str, Any] | None:
        return condition(await kubectl.get(COURIER_GATEWAYS, NAMESPACE, "1st-gateway"), "Ready")

    ready = await eventually(reported)
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert ready["message"].startswith("metadata.name: '1st-gateway' is not a valid gateway name")
    assert await kubectl.get(DEPLOYMENTS, NAMESPACE, "1st-gateway-ingress") is None


async def test_an_operator_limited_to_namespaces_reconciles_there(
    operator: Any, kubectl: KubeClient, redis_server: RedisServer
) -> None:
    """``OPERATOR_NAMESPACES`` (the chart's namespaced mode): watches only what it names."""
    await operator(OPERATOR_NAMESPACES=f"{NAMESPACE},elsewhere")
    await create_gateway(kubectl, redis_server.url, "scoped")
    objects = await eventually(lambda: _objects(kubectl, "scoped"))
    assert objects["worker"]["spec"]["replicas"] == 1


async def test_lists_are_read_in_pages(
    operator: Any,
    kube_api: Any,
    kubectl: KubeClient,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before watching, kopf lists each resource in pages of ``LIST_CHUNK_SIZE`` (the emulator
    pages like the API server), and every gateway of every page is reconciled."""
    from courier_operator import handlers

    monkeypatch.setattr(handlers, "LIST_CHUNK_SIZE", 2)
    names = ["paged-a", "paged-b", "paged-c"]
    for name in names:
        await create_gateway(kubectl, redis_server.url, name)
    await operator()
    for name in names:
        await eventually(lambda name=name: kubectl.get(DEPLOYMENTS, NAMESPACE, f"{name}-worker"))
    pages = [
        request
        for request in list(kube_api)
        if request.resource is not None
        and request.resource.plural == "couriergateways"
        and request.name is None
        and str(request.method).endswith("GET")
        and request.params.get("watch") != "true"
    ]
    assert {request.params.get("limit") for request in pages} == {"2"}
    assert [request.params.get("continue", "") for request in pages][:2] == ["", "2"]
