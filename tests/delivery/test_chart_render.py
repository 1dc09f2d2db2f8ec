"""The chart renders valid, consistent manifests in every configuration.

Each test runs against each value set of ``conftest.VALUE_SETS`` (defaults, every feature on, a
namespaced operator, the kind development values): built-in objects validate against the
Kubernetes 1.30 schemas in strict mode, custom resources against the chart's own CRDs, the chart
lints clean, selectors select what they should and nothing else, and every pod is locked down.
"""

from __future__ import annotations

from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from courier_operator.gateway.spec import parse_gateway_spec
from tests.delivery.conftest import (
    CHART,
    FULL_VALUES,
    NAMESPACE,
    RELEASE,
    VALUE_SETS,
    Render,
    Rendered,
    matches,
    operator_objects,
)
from tests.support.crds import validate_custom_resource

KUBERNETES = "1.30.0"
# Kinds of the Prometheus Operator: no schema offline, checked field by field elsewhere.
MONITORING = "monitoring.coreos.com"
CHART_CRD_GROUPS = {"gateway.courier.dev", "kopf.dev"}
STANDARD_LABELS = {
    "helm.sh/chart",
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/managed-by",
}


def group_of(doc: dict[str, Any]) -> str:
    return str(doc["apiVersion"]).rpartition("/")[0]


def describe(template: str, doc: dict[str, Any]) -> str:
    return f"{template}: {doc['kind']}/{doc['metadata'].get('name')}"


def test_every_builtin_object_is_valid_kubernetes(rendered: Rendered) -> None:
    checked = 0
    for template, doc in rendered.objects:
        if group_of(doc) in CHART_CRD_GROUPS | {MONITORING}:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        except jsonschema.ValidationError as error:
            # The library's message embeds the whole schema: keep the reason and the place.
            pytest.fail(f"{describe(template, doc)}: {error.message} at {list(error.path)}")
        checked += 1
    assert checked >= 3


def test_every_custom_resource_is_valid_against_the_chart_crds(rendered: Rendered) -> None:
    """Including the kopf peering objects: the chart must ship a CRD for each kind it creates."""
    for template, doc in rendered.objects:
        if group_of(doc) in CHART_CRD_GROUPS:
            try:
                validate_custom_resource(doc)
            except jsonschema.ValidationError as error:
                pytest.fail(f"{describe(template, doc)}: {error.message} at {list(error.path)}")
            except LookupError as error:
                pytest.fail(f"{describe(template, doc)}: {error}")


def test_the_operator_accepts_the_gateway_the_chart_creates(rendered: Rendered) -> None:
    for gateway in rendered.of_kind("CourierGateway"):
        parse_gateway_spec(gateway["spec"])


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_the_chart_lints_clean(name: str) -> None:
    report = helm.lint(
        CHART, VALUE_SETS[name], strict=True, namespace=NAMESPACE, kube_version=f"v{KUBERNETES}"
    )
    # An icon is a recommendation (severity 1, info) for charts published to a repository.
    messages = [m for m in report["messages"] if m["error"] != "icon is recommended"]
    assert report["errors"] == []
    assert messages == []


def test_every_object_carries_the_standard_labels(rendered: Rendered) -> None:
    for template, doc in rendered.objects:
        labels = doc["metadata"].get("labels", {})
        assert set(labels) >= STANDARD_LABELS, describe(template, doc)
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert "app.kubernetes.io/component" in labels, describe(template, doc)


def test_objects_live_in_the_release_namespace(rendered: Rendered) -> None:
    watched = set(rendered.values["operator"]["watchNamespaces"])
    for template, doc in rendered.objects:
        namespace = doc["metadata"].get("namespace")
        cluster_kinds = {"ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"}
        if doc["kind"] in cluster_kinds | {"CustomResourceDefinition"}:
            assert namespace is None, describe(template, doc)
        elif doc["kind"] in {"Role", "RoleBinding", "KopfPeering"}:
            assert namespace in watched, describe(template, doc)
        else:
            assert namespace == NAMESPACE, describe(template, doc)


def test_workload_selectors_select_their_own_pods_only(rendered: Rendered) -> None:
    """Every workload selects its template, and no other pod of the chart or of the gateway
    the operator builds (the gateway pods share the name label with the chart's pods)."""
    workloads = [
        (doc, template["metadata"]["labels"]) for doc, template in rendered.pod_templates()
    ]
    workloads += [
        (doc, doc["spec"]["template"]["metadata"]["labels"])
        for doc in operator_objects(rendered)
        if doc["kind"] == "Deployment"
    ]
    for doc, labels in workloads:
        if doc["kind"] == "Pod":
            continue
        selector = doc["spec"]["selector"]
        assert matches(selector, labels), doc["metadata"]["name"]
        for other, other_labels in workloads:
            if other is not doc:
                assert not matches(selector, other_labels), (
                    f"{doc['metadata']['name']} selects the pods of {other['metadata']['name']}"
                )


def test_services_and_budgets_select_a_workload(rendered: Rendered) -> None:
    for service in rendered.of_kind("Service"):
        # Every Service of the chart governs one StatefulSet (the development stores).
        (statefulset,) = [
            doc
            for doc in rendered.of_kind("StatefulSet")
            if doc["spec"]["serviceName"] == service["metadata"]["name"]
        ]
        template = statefulset["spec"]["template"]
        assert matches(service["spec"]["selector"], template["metadata"]["labels"])
        ports = {port["name"] for port in template["spec"]["containers"][0]["ports"]}
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= ports
    operator = rendered.one("Deployment")["spec"]["template"]["metadata"]["labels"]
    for budget in rendered.of_kind("PodDisruptionBudget"):
        assert matches(budget["spec"]["selector"], operator)
    assert bool(rendered.of_kind("PodDisruptionBudget")) == (
        rendered.values["operator"]["replicas"] > 1
    )


def test_every_pod_is_locked_down(rendered: Rendered) -> None:
    for workload, template in rendered.pod_templates():
        name = workload["metadata"]["name"]
        pod = template["spec"]
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True, name
        assert context["runAsUser"] > 0, name
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
        is_operator = name.endswith("-operator")
        assert pod["automountServiceAccountToken"] is is_operator, name
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, name
            assert security["allowPrivilegeEscalation"] is False, name
            assert security["capabilities"]["drop"] == ["ALL"], name
            assert "limits" in container["resources"], name
            assert "memory" in container["resources"]["limits"], name
            # A read-only root needs somewhere to write: every pod mounts a volume for it.
            assert container.get("volumeMounts"), name


def test_the_chart_pods_run_as_the_image_user(rendered: Rendered) -> None:
    """The operator and the helm test run the courier-gateway image: UID/GID 10001."""
    pods = [rendered.one("Deployment")["spec"]["template"]["spec"]]
    pods += [pod["spec"] for pod in rendered.of_kind("Pod")]
    for pod in pods:
        context = pod["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (
            10001,
            10001,
            10001,
        )


def test_every_long_running_container_has_probes(rendered: Rendered) -> None:
    for workload, template in rendered.pod_templates():
        if workload["kind"] == "Pod":
            continue  # the helm test runs once
        for container in template["spec"]["containers"]:
            assert "livenessProbe" in container, workload["metadata"]["name"]
            assert "readinessProbe" in container, workload["metadata"]["name"]


def test_the_operator_runs_the_operator_role(rendered: Rendered) -> None:
    deployment = rendered.one("Deployment", f"{RELEASE}-operator")
    assert deployment["spec"]["replicas"] == rendered.values["operator"]["replicas"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["operator"]
    env = {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}
    assert env == {
        "OPERATOR_NAMESPACES": ",".join(rendered.values["operator"]["watchNamespaces"]),
        "OPERATOR_PEERING": "courier-gateway",
        "OPERATOR_HEALTH_PORT": "8080",
        "LOG_LEVEL": rendered.values["operator"]["logLevel"],
        # Gateways without spec.image run the operator's own image.
        "OPERATOR_IMAGE": container["image"],
        # kopf's identity, so it never asks the passwd database about an unknown UID.
        "POD_ID": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}},
    }
    assert container["ports"] == [{"name": "health", "containerPort": 8080, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert pod["serviceAccountName"] == f"{RELEASE}-operator"


def test_images_are_pinned(rendered: Rendered) -> None:
    for _, template in rendered.pod_templates():
        for container in template["spec"]["containers"]:
            image = container["image"]
            repository, _, tag = image.rpartition(":")
            assert repository and tag and tag != "latest", image


def test_the_image_defaults_to_the_app_version(render: Render) -> None:
    def operator_image(rendered: Rendered) -> str:
        return str(rendered.one("Deployment")["spec"]["template"]["spec"]["containers"][0]["image"])

    def operator_env(rendered: Rendered) -> dict[str, str]:
        (container,) = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"]
        return {item["name"]: item.get("value", "") for item in container["env"]}

    rendered = render({"gateway": {"enabled": True}, **_stores()})
    image = "ghcr.io/courier-gateway/courier-gateway:0.1.0"
    assert operator_image(rendered) == image
    # The gateway names no image: the operator gives it its own (OPERATOR_IMAGE).
    assert "image" not in rendered.one("CourierGateway")["spec"]
    assert operator_env(rendered)["OPERATOR_IMAGE"] == image
    assert rendered.one("Pod")["spec"]["containers"][0]["image"] == image
    pinned = render(
        {"image": {"tag": "1.2.3"}, "gateway": {"enabled": True, "image": "x/y:9"}, **_stores()}
    )
    assert operator_image(pinned) == "ghcr.io/courier-gateway/courier-gateway:1.2.3"
    assert pinned.one("CourierGateway")["spec"]["image"] == "x/y:9"


def test_a_digest_pins_every_image_of_the_chart(render: Render) -> None:
    digest = "sha256:" + "ab" * 32
    rendered = render(
        {
            "image": {"tag": "1.2.3", "digest": digest},
            "gateway": {"enabled": True},
            **_stores(),
            "cleanup": {"enabled": True},
        }
    )
    expected = f"ghcr.io/courier-gateway/courier-gateway@{digest}"
    images = {
        container["image"]
        for _, template in rendered.pod_templates()
        for container in template["spec"]["containers"]
    }
    images |= {
        container["image"]
        for job in rendered.of_kind("Job")
        for container in job["spec"]["template"]["spec"]["containers"]
    }
    assert images == {expected}
    (container,) = rendered.one("Deployment")["spec"]["template"]["spec"]["containers"]
    assert {"name": "OPERATOR_IMAGE", "value": expected} in container["env"]


def test_global_values_of_an_umbrella_chart_are_accepted_and_honoured(render: Render) -> None:
    """Argo CD and umbrella charts pass ``global`` to every chart: it must not be refused."""
    values = {
        "global": {
            "imageRegistry": "registry.example.com",
            "imagePullSecrets": [{"name": "umbrella-pull"}],
            "storageClass": "fast",  # another chart's global: ignored here
        },
        "imagePullSecrets": [{"name": "registry"}],
        "gateway": {"enabled": True},
        **_stores(),
    }
    rendered = render(values)
    pod = rendered.one("Deployment")["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == (
        "registry.example.com/ghcr.io/courier-gateway/courier-gateway:0.1.0"
    )
    assert pod["imagePullSecrets"] == [{"name": "registry"}, {"name": "umbrella-pull"}]
    assert rendered.one("CourierGateway")["spec"]["imagePullSecrets"] == pod["imagePullSecrets"]
    for _, doc in rendered.objects:
        if group_of(doc) not in CHART_CRD_GROUPS | {MONITORING, "apiextensions.k8s.io"}:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def _stores() -> dict[str, Any]:
    return {"redis": {"existingSecret": "redis"}, "mongo": {"existingSecret": "mongo"}}


def test_the_gateway_spec_maps_the_values_one_to_one(render: Render) -> None:
    rendered = render(FULL_VALUES)
    values = rendered.values["gateway"]
    spec = rendered.one("CourierGateway")["spec"]
    for key in ("ingress", "worker", "retry", "signing", "logLevel", "serviceAccountName"):
        assert spec[key] == values[key], key
    assert spec["imagePullSecrets"] == [{"name": "registry"}]
    assert spec["redis"] == {
        "mode": "standalone",
        "urlSecretRef": {"name": f"{RELEASE}-redis", "key": "url"},
        "stream": "courier-events",
        "partitions": 1,
        "minReplicas": 0,
    }
    assert spec["mongo"] == {
        "uriSecretRef": {"name": "courier-mongo", "key": "connection"},
        "database": "courier_gateway",
    }
    assert spec["downstream"] == {
        "url": "https://orders.example.com/hooks/shipments",
        "signingSecretRef": {"name": "orders-hook", "key": "secret"},
        "timeoutMs": 5000,
    }


def test_the_gateway_is_off_by_default_and_needs_its_stores(render: Render) -> None:
    assert render().of_kind("CourierGateway") == []
    cases = {
        "needs a Redis": {"gateway": {"enabled": True}, "mongo": {"existingSecret": "m"}},
        "needs a MongoDB": {"gateway": {"enabled": True}, "redis": {"existingSecret": "r"}},
        "not both": {
            "gateway": {"enabled": True},
            "redis": {"existingSecret": "r", "inCluster": {"enabled": True}},
            "mongo": {"existingSecret": "m"},
        },
        "minReplicas must not exceed": {
            "gateway": {"enabled": True, "worker": {"minReplicas": 5, "maxReplicas": 2}},
            **_stores(),
        },
        "baseDelayMs must not exceed": {
            "gateway": {"enabled": True, "retry": {"baseDelayMs": 9000, "maxDelayMs": 10}},
            **_stores(),
        },
    }
    for message, values in cases.items():
        with pytest.raises(helm.HelmRenderError, match=message):
            render(values)


def test_the_in_cluster_stores_back_the_gateway(render: Render) -> None:
    rendered = render(VALUE_SETS["dev"])
    spec = rendered.one("CourierGateway")["spec"]
    for store, key, port, ref in (
        ("redis", "url", 6379, spec["redis"]["urlSecretRef"]),
        ("mongo", "uri", 27017, spec["mongo"]["uriSecretRef"]),
    ):
        name = f"{RELEASE}-{store}"
        assert ref == {"name": name, "key": key}
        url = rendered.one("Secret", name)["stringData"][key]
        # The URL names the Service the StatefulSet is governed by, in the release namespace.
        assert f"://{name}.{NAMESPACE}.svc:{port}/" in url
        service = rendered.one("Service", name)
        assert service["spec"]["ports"][0]["port"] == port
        statefulset = rendered.one("StatefulSet", name)
        assert statefulset["spec"]["serviceName"] == name
        assert statefulset["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]
    redis = rendered.one("StatefulSet", f"{RELEASE}-redis")["spec"]["template"]["spec"]
    (container,) = redis["containers"]
    assert container["image"] == "redis:7.2.4-alpine"
    assert " ".join(container["args"]).startswith(
        "redis-server --appendonly yes --appendfsync everysec"
    )
    mongo = rendered.one("StatefulSet", f"{RELEASE}-mongo")["spec"]["template"]["spec"]
    assert mongo["containers"][0]["image"] == "mongo:7.0.14"
    # Off by default: production brings its own stores.
    assert render().of_kind("StatefulSet") == []


def test_rendering_is_stable(render: Render) -> None:
    """Two renders are identical: no random or time-based values (upgrades would churn)."""
    first, second = render(FULL_VALUES), render(FULL_VALUES)
    assert yaml.safe_dump(first.objects) == yaml.safe_dump(second.objects)
