"""Rendering the chart for real (Helm's own Go code through helm-python-sdk), offline.

``render(values)`` returns the manifests a ``helm install`` would apply, parsed, with the template
each came from. The value sets below are the configurations every chart test runs against:
the defaults, every optional feature on, a namespaced operator, the kind development values and
the production example (k8s/production-values.yaml).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "courier-gateway"
DEV_VALUES = ROOT / "k8s" / "dev-values.yaml"
PRODUCTION_VALUES = ROOT / "k8s" / "production-values.yaml"
RELEASE = "courier-gateway"
NAMESPACE = "courier"

# Every optional object on, with external stores for one and the in-cluster store for the other.
FULL_VALUES: dict[str, Any] = {
    "imagePullSecrets": [{"name": "registry"}],
    "operator": {
        "replicas": 2,
        "podAnnotations": {"example.com/team": "couriers"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops"}],
    },
    "redis": {"inCluster": {"enabled": True, "persistence": {"storageClassName": "standard"}}},
    "mongo": {"existingSecret": "courier-mongo", "existingSecretKey": "connection"},
    "gateway": {
        "enabled": True,
        "serviceAccountName": "courier-gateway",
        "downstream": {
            "url": "https://orders.example.com/hooks/shipments",
            "signingSecretRef": {"name": "orders-hook", "key": "secret"},
        },
        "signing": {
            "sources": [
                {
                    "name": "dhl",
                    "scheme": "standard-webhooks",
                    "rateLimit": {"perSecond": 50, "burst": 100},
                    "rotation": {"enabled": True, "interval": "720h", "overlap": "24h"},
                },
                {"name": "courier"},
            ]
        },
    },
    "monitoring": {
        "podMonitor": {"enabled": True},
        "serviceMonitor": {"enabled": True},
        "additionalLabels": {"release": "prometheus"},
    },
    "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Courier"}},
    "prometheusRule": {"enabled": True},
    "networkPolicy": {
        "enabled": True,
        "ingress": {"from": [{"namespaceSelector": {"matchLabels": {"edge": "true"}}}]},
        "metrics": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
        },
        "egress": {
            "restrict": True,
            "extra": [{"to": [{"ipBlock": {"cidr": "203.0.113.0/24"}}], "ports": [{"port": 443}]}],
        },
    },
}

NAMESPACED_VALUES: dict[str, Any] = {
    "operator": {"watchNamespaces": ["shipping", "returns"]},
    "redis": {"existingSecret": "courier-redis"},
    "mongo": {"inCluster": {"enabled": True}},
    "gateway": {"enabled": True, "name": "edge"},
    "monitoring": {"podMonitor": {"enabled": True}},
    "networkPolicy": {"enabled": True},
}


def dev_values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(DEV_VALUES.read_text())
    return loaded


def production_values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(PRODUCTION_VALUES.read_text())
    return loaded


VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "full": FULL_VALUES,
    "namespaced": NAMESPACED_VALUES,
    "dev": dev_values(),
    "production": production_values(),
}


@dataclass
class Rendered:
    """The manifests of one render: ``(template, object)`` pairs, hooks included."""

    objects: list[tuple[str, dict[str, Any]]]
    notes: str
    values: dict[str, Any] = field(default_factory=dict)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [doc for _, doc in self.objects if doc["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [
            doc for doc in self.of_kind(kind) if name is None or doc["metadata"]["name"] == name
        ]
        assert len(found) == 1, f"{len(found)} {kind} named {name!r}"
        return found[0]

    def pod_templates(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(workload, pod template) for every Deployment and StatefulSet, and bare Pods."""
        found = [
            (doc, doc["spec"]["template"])
            for doc in self.of_kind("Deployment") + self.of_kind("StatefulSet")
        ]
        found += [(doc, doc) for doc in self.of_kind("Pod")]
        return found


Render = Callable[..., Rendered]


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a label selector (matchLabels and matchExpressions, or a plain map) matches."""
    plain = "matchLabels" not in selector and "matchExpressions" not in selector
    wanted = selector if plain else selector.get("matchLabels", {})
    if any(labels.get(key) != value for key, value in wanted.items()):
        return False
    for expression in [] if plain else selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values")
        present = key in labels
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def operator_objects(rendered: Rendered) -> list[dict[str, Any]]:
    """What the operator creates for the chart's CourierGateway (or a sample one in the release
    namespace when the chart creates none): built by the operator's own code, so the chart's
    selectors are checked against the real labels and port names."""
    from courier_operator.gateway import workloads
    from courier_operator.gateway.spec import parse_gateway_spec

    gateways = rendered.of_kind("CourierGateway")
    gateway = (
        gateways[0]
        if gateways
        else {
            "apiVersion": "gateway.courier.dev/v1alpha1",
            "kind": "CourierGateway",
            "metadata": {"name": "sample", "namespace": NAMESPACE},
            "spec": {
                "image": "courier-gateway:sample",
                "redis": {"urlSecretRef": {"name": "redis"}},
                "mongo": {"uriSecretRef": {"name": "mongo"}},
                "signing": {"sources": [{"name": "courier"}]},
            },
        }
    )
    gateway = {**gateway, "metadata": {**gateway["metadata"], "uid": "0000"}}
    spec = parse_gateway_spec(gateway["spec"])
    return [
        workloads.ingress_deployment(gateway, spec),
        workloads.worker_deployment(gateway, spec, spec.worker.minReplicas),
        workloads.service(gateway, spec),
        workloads.pod_disruption_budget(gateway, "ingress"),
        workloads.pod_disruption_budget(gateway, "worker"),
    ]


@pytest.fixture(scope="session")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def render(chart: helm.Chart) -> Render:
    """``render(values, name=..., namespace=...)``: the parsed manifests of an install."""

    def _render(
        values: dict[str, Any] | None = None, *, name: str = RELEASE, namespace: str = NAMESPACE
    ) -> Rendered:
        manifests = chart.render(values or {}, name=name, namespace=namespace, is_install=True)
        objects: list[tuple[str, dict[str, Any]]] = []
        notes = ""
        for template, text in sorted(manifests.items()):
            if template.endswith("NOTES.txt"):
                notes = text
                continue
            objects.extend((template, doc) for doc in yaml.safe_load_all(text) if doc)
        return Rendered(objects, notes, chart.merge_values(values or {}))

    return _render


@pytest.fixture(scope="session", params=sorted(VALUE_SETS))
def value_set(request: pytest.FixtureRequest) -> str:
    """The name of each value set in turn."""
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def rendered(render: Render, value_set: str) -> Rendered:
    """The chart rendered with each value set in turn."""
    return render(VALUE_SETS[value_set])
