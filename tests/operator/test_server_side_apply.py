"""The operator writes with server-side apply and shares objects with other field managers.

On the emulated API (which implements apply by field manager, see tests/support/apply.py):

- every write the operator's client makes is an apply patch under the field manager
  ``courier-gateway-operator``, forced, and the objects record that manager as their owner;
- fields another manager adds to an owned Deployment (a mesh injecting a sidecar container, an
  annotation, a label) survive reconciliation, while the operator's own fields that a hand edit
  changed are taken back;
- a field the operator stops setting (an option removed from the spec) leaves the object;
- scheduling settings of ``spec.<component>.pod`` reach the Deployments, and defaults spread
  replicas over nodes and zones; a gateway without ``spec.image`` runs the operator's image.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import kubernetes_validate
import pytest

from courier_operator.fields import managed_paths
from courier_operator.kube import (
    COURIER_GATEWAYS,
    DEPLOYMENTS,
    FIELD_MANAGER,
    USER_AGENT,
    KubeClient,
)
from tests.operator.conftest import NAMESPACE, create_gateway
from tests.support.kube import eventually
from tests.support.servers import RedisServer

pytestmark = pytest.mark.timeout(60)

APPLY = "application/apply-patch+yaml"
OWNED = {"deployments", "services", "configmaps", "secrets", "poddisruptionbudgets", "jobs"}


async def _deployment(kubectl: KubeClient, name: str) -> dict[str, Any] | None:
    return await kubectl.get(DEPLOYMENTS, NAMESPACE, name)


def _writes(kube_api: Any) -> list[Any]:
    """The operator's own writes (kopf's bookkeeping on the custom resources left aside)."""
    found = []
    for request in list(kube_api):
        headers = {name.lower(): value for name, value in request.headers.items()}
        if headers.get("user-agent") != USER_AGENT or request.resource is None:
            continue
        method = str(request.method).rsplit(".", 1)[-1].upper()
        if method in ("POST", "PUT", "PATCH"):
            found.append((request, headers, method))
    return found


async def test_the_operators_writes_are_forced_applies_under_its_field_manager(
    operator: Any, kube_api: Any, kubectl: KubeClient, redis_server: RedisServer
) -> None:
    await operator()
    await create_gateway(kubectl, redis_server.url, "applied")
    await eventually(lambda: _deployment(kubectl, "applied-worker"))

    async def status_written() -> bool:
        live = await kubectl.get(COURIER_GATEWAYS, NAMESPACE, "applied")
        return bool((live or {}).get("status", {}).get("conditions"))

    await eventually(status_written)
    writes = _writes(kube_api)
    kinds = {
        request.resource.plural + (f"/{request.subresource}" if request.subresource else "")
        for request, _, _ in writes
    }
    assert kinds >= OWNED - {"jobs"} | {"couriergateways/status"}
    for request, headers, method in writes:
        where = f"{method} {request.url}"
        assert method == "PATCH", where
        assert headers["content-type"] == APPLY, where
        assert request.params["fieldManager"] == FIELD_MANAGER, where
        assert request.params["force"] == "true", where
    ingress = await _deployment(kubectl, "applied-ingress")
    assert ingress is not None
    entries = ingress["metadata"]["managedFields"]
    assert [(e["manager"], e["operation"]) for e in entries] == [(FIELD_MANAGER, "Apply")]
    assert ("f:spec", "f:replicas") in managed_paths(ingress, FIELD_MANAGER)


async def test_fields_of_other_managers_survive_and_drift_is_taken_back(
    operator: Any, kube_api: Any, kubectl: KubeClient, redis_server: RedisServer
) -> None:
    await operator()
    await create_gateway(kubectl, redis_server.url, "shared")
    live = await eventually(lambda: _deployment(kubectl, "shared-ingress"))
    (ours,) = live["spec"]["template"]["spec"]["containers"]

    # A service mesh's injector adds a sidecar and an annotation (its own apply, not forced);
    # a policy engine labels the Deployment.
    mesh = KubeClient(kubectl_info(kube_api), user_agent="mesh", field_manager="mesh-injector")
    try:
        await mesh.apply(
            DEPLOYMENTS,
            {
                "metadata": {
                    "name": "shared-ingress",
                    "namespace": NAMESPACE,
                    "labels": {"policy.example/team": "couriers"},
                },
                "spec": {
                    "template": {
                        "metadata": {"annotations": {"mesh.example/inject": "done"}},
                        "spec": {"containers": [{"name": "mesh-proxy", "image": "mesh/proxy:1.2"}]},
                    }
                },
            },
        )
    finally:
        await mesh.aclose()
    # And someone edits a field the operator owns, by hand.
    edited = ours | {"image": "evil:latest"}
    await kubectl.merge_patch(
        DEPLOYMENTS,
        NAMESPACE,
        "shared-ingress",
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [edited, {"name": "mesh-proxy", "image": "mesh/proxy:1.2"}]
                    }
                }
            }
        },
    )

    async def reconciled() -> dict[str, Any] | None:
        live = await _deployment(kubectl, "shared-ingress")
        containers = {c["name"]: c for c in (live or {})["spec"]["template"]["spec"]["containers"]}
        return live if containers.get("ingress", {}).get("image") == ours["image"] else None

    live = await eventually(reconciled)
    containers = {c["name"]: c for c in live["spec"]["template"]["spec"]["containers"]}
    assert containers["mesh-proxy"]["image"] == "mesh/proxy:1.2"
    assert containers["ingress"] == ours
    template = live["spec"]["template"]["metadata"]
    assert template["annotations"]["mesh.example/inject"] == "done"
    assert live["metadata"]["labels"]["policy.example/team"] == "couriers"
    managers = {entry["manager"] for entry in live["metadata"]["managedFields"]}
    assert {FIELD_MANAGER, "mesh-injector"} <= managers

    # Settled: further passes (the timer runs every 0.3 s) write nothing more to it.
    before = len([r for r, _, _ in _writes(kube_api) if r.name == "shared-ingress"])
    await asyncio.sleep(1.5)
    after = len([r for r, _, _ in _writes(kube_api) if r.name == "shared-ingress"])
    assert after == before


def kubectl_info(kube_api: Any) -> kopf.ConnectionInfo:
    return kopf.ConnectionInfo(server=str(kube_api.url))


POD = {
    "annotations": {"example.com/scrape": "true"},
    "labels": {"team": "parcels", "app.kubernetes.io/instance": "not-mine"},
    "nodeSelector": {"kubernetes.io/os": "linux", "pool": "edge"},
    "affinity": {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["edge"]}]}
                ]
            }
        }
    },
    "tolerations": [
        {"key": "dedicated", "operator": "Equal", "value": "edge", "effect": "NoSchedule"}
    ],
    "topologySpreadConstraints": [
        {
            "maxSkew": 1,
            "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "DoNotSchedule",
        }
    ],
    "priorityClassName": "couriers-high",
    "securityContext": {"runAsUser": 20000, "runAsGroup": 20000, "fsGroup": 20000},
}


async def test_scheduling_settings_reach_the_deployments(
    operator: Any, kubectl: KubeClient, redis_server: RedisServer
) -> None:
    await operator(OPERATOR_IMAGE="registry.example/courier-gateway@sha256:" + "c" * 64)
    await create_gateway(kubectl, redis_server.url, "placed", ingress={"pod": POD})
    # No image of its own: the operator's (OPERATOR_IMAGE, digest-pinned here).
    await kubectl.merge_patch(COURIER_GATEWAYS, NAMESPACE, "placed", {"spec": {"image": None}})

    async def both() -> tuple[dict[str, Any], dict[str, Any]] | None:
        ingress = await _deployment(kubectl, "placed-ingress")
        worker = await _deployment(kubectl, "placed-worker")
        image = "registry.example/courier-gateway@sha256:" + "c" * 64
        if not (ingress and worker):
            return None
        images = {
            c["image"]
            for d in (ingress, worker)
            for c in d["spec"]["template"]["spec"]["containers"]
        }
        return (ingress, worker) if images == {image} else None

    ingress, worker = await eventually(both)
    template = ingress["spec"]["template"]
    pod = template["spec"]
    assert pod["nodeSelector"] == POD["nodeSelector"]
    assert pod["affinity"] == POD["affinity"]
    assert pod["tolerations"] == POD["tolerations"]
    assert pod["priorityClassName"] == "couriers-high"
    selector = ingress["spec"]["selector"]["matchLabels"]
    assert pod["topologySpreadConstraints"] == [
        {**POD["topologySpreadConstraints"][0], "labelSelector": {"matchLabels": selector}}
    ]
    # Overrides within the restricted profile: never root, seccomp kept.
    assert pod["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 20000,
        "runAsGroup": 20000,
        "fsGroup": 20000,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert template["metadata"]["annotations"]["example.com/scrape"] == "true"
    assert template["metadata"]["labels"]["team"] == "parcels"
    # The operator's labels win: the selector keeps matching its pods.
    assert selector.items() <= template["metadata"]["labels"].items()
    # The worker has no settings of its own: its replicas spread over nodes, then zones.
    spread = worker["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert [(c["topologyKey"], c["whenUnsatisfiable"]) for c in spread] == [
        ("kubernetes.io/hostname", "ScheduleAnyway"),
        ("topology.kubernetes.io/zone", "ScheduleAnyway"),
    ]
    assert all(
        c["labelSelector"] == {"matchLabels": worker["spec"]["selector"]["matchLabels"]}
        for c in spread
    )
    for deployment in (ingress, worker):
        clean = {k: v for k, v in deployment.items() if k != "status"}
        clean["metadata"] = {
            k: v for k, v in clean["metadata"].items() if k not in ("managedFields",)
        }
        kubernetes_validate.validate(clean, "1.30.0", strict=True)

    # Taken out of the spec, a setting leaves the Deployment (the operator owned it).
    await kubectl.merge_patch(
        COURIER_GATEWAYS,
        NAMESPACE,
        "placed",
        {"spec": {"ingress": {"pod": {"nodeSelector": None, "priorityClassName": None}}}},
    )

    async def removed() -> bool:
        live = await _deployment(kubectl, "placed-ingress")
        pod = (live or {})["spec"]["template"]["spec"]
        return "nodeSelector" not in pod and "priorityClassName" not in pod

    await eventually(removed)
