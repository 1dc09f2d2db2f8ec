"""The operator wires adapters: a source's ``adapter`` reaches the sources file, a custom-adapter
ConfigMap is mounted as ADAPTERS_DIR in the ingress and in replay Jobs, the CRD schema accepts
both, and the sources file it writes loads in the gateway with the built-in adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from courier_gateway.config import Settings, load_sources
from courier_operator.gateway.spec import InvalidSpecError, parse_gateway_spec
from courier_operator.gateway.workloads import ADAPTERS_MOUNT, ingress_deployment, sources_document
from courier_operator.replay.job import parse_replay_spec, replay_job
from tests.support.crds import validate_custom_resource

SPEC: dict[str, Any] = {
    "image": "registry.example/courier-gateway:1.0.0",
    "redis": {"urlSecretRef": {"name": "queue"}},
    "mongo": {"uriSecretRef": {"name": "store"}},
    "adapters": {"configMapName": "carrier-adapters"},
    "signing": {
        "sources": [
            {"name": "fedex", "adapter": "fedex"},
            {"name": "ship24", "adapter": "ship24", "scheme": "v1"},  # the API server's default
            {"name": "courier"},
        ]
    },
}
GATEWAY = {
    "apiVersion": "gateway.courier.dev/v1alpha1",
    "kind": "CourierGateway",
    "metadata": {"name": "gw", "namespace": "ns", "uid": "u1"},
}


def test_the_crd_accepts_adapters_and_the_operator_wires_them() -> None:
    validate_custom_resource(
        {
            "apiVersion": "gateway.courier.dev/v1alpha1",
            "kind": "CourierGateway",
            "metadata": {"name": "gw", "namespace": "ns"},
            "spec": SPEC,
        }
    )
    spec = parse_gateway_spec(SPEC)
    document = yaml.safe_load(sources_document(spec))["sources"]
    assert document["fedex"]["adapter"] == "fedex" and "scheme" not in document["fedex"]
    assert document["ship24"]["adapter"] == "ship24"
    assert document["courier"]["scheme"] == "v1"
    ingress = ingress_deployment(GATEWAY, spec)["spec"]["template"]["spec"]
    container = ingress["containers"][0]
    assert {"name": "ADAPTERS_DIR", "value": ADAPTERS_MOUNT} in container["env"]
    assert {"name": "adapters", "mountPath": ADAPTERS_MOUNT, "readOnly": True} in container[
        "volumeMounts"
    ]
    assert {"name": "adapters", "configMap": {"name": "carrier-adapters"}} in ingress["volumes"]
    request = {
        "apiVersion": "gateway.courier.dev/v1alpha1",
        "kind": "ReplayRequest",
        "metadata": {"name": "fix-1", "namespace": "ns", "uid": "r1"},
        "spec": {"gatewayRef": {"name": "gw"}, "selector": {"reasonCodes": ["UNMAPPED"]}},
    }
    job = replay_job(request, parse_replay_spec(request["spec"]), GATEWAY, spec)["spec"][
        "template"
    ]["spec"]
    assert {"name": "ADAPTERS_DIR", "value": ADAPTERS_MOUNT} in job["containers"][0]["env"]
    assert {"name": "adapters", "configMap": {"name": "carrier-adapters"}} in job["volumes"]


def test_without_custom_adapters_nothing_is_mounted() -> None:
    spec = parse_gateway_spec(
        {**SPEC, "adapters": None} if False else {k: v for k, v in SPEC.items() if k != "adapters"}
    )
    container = ingress_deployment(GATEWAY, spec)["spec"]["template"]["spec"]["containers"][0]
    assert all(item["name"] != "ADAPTERS_DIR" for item in container["env"])


def test_a_scheme_and_an_adapter_together_are_refused() -> None:
    bad = {
        **SPEC,
        "signing": {
            "sources": [{"name": "fedex", "adapter": "fedex", "scheme": "standard-webhooks"}]
        },
    }
    with pytest.raises(InvalidSpecError, match="give scheme or adapter, not both"):
        parse_gateway_spec(bad)


def test_the_written_sources_file_loads_in_the_gateway(tmp_path: Path) -> None:
    spec = parse_gateway_spec({k: v for k, v in SPEC.items() if k != "adapters"})
    document = yaml.safe_load(sources_document(spec))
    for name, source in document["sources"].items():
        keys = tmp_path / name
        keys.mkdir()
        (keys / "k-2026").write_text("an-operator-generated-key-0001")
        source["secretsDir"] = str(keys)
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(document))
    sources = load_sources(Settings.from_env({"SOURCES_FILE": str(path)}))
    assert sources["fedex"].adapter.name == "fedex"
    assert sources["ship24"].adapter.name == "ship24"
    assert sources["courier"].adapter.name == "v1"
