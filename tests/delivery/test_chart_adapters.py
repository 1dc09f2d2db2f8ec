"""The chart wires custom adapters: files given as values become a ConfigMap named in the
CourierGateway's ``spec.adapters``; an existing ConfigMap is referenced as is; none, nothing."""

from __future__ import annotations

from typing import Any

from tests.support.crds import validate_custom_resource

ACME = "name: acme\ntitle: ACME\nextends: ship24\n"


def _values(adapters: dict[str, Any]) -> dict[str, Any]:
    return {
        "redis": {"existingSecret": "queue"},
        "mongo": {"existingSecret": "store"},
        "gateway": {
            "enabled": True,
            "adapters": adapters,
            "signing": {"sources": [{"name": "courier"}, {"name": "acme", "adapter": "acme"}]},
        },
    }


def _objects(render: Any, adapters: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {doc["kind"]: doc for _, doc in render(_values(adapters)).objects}


def test_adapter_files_become_a_configmap_the_gateway_mounts(render: Any) -> None:
    objects = _objects(render, {"files": {"acme.yaml": ACME}})
    gateway = objects["CourierGateway"]
    validate_custom_resource(gateway)
    name = gateway["spec"]["adapters"]["configMapName"]
    configmaps = [
        doc
        for _, doc in render(_values({"files": {"acme.yaml": ACME}})).objects
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == name
    ]
    assert len(configmaps) == 1
    assert configmaps[0]["data"]["acme.yaml"].strip() == ACME.strip()
    assert gateway["spec"]["signing"]["sources"][1] == {"name": "acme", "adapter": "acme"}


def test_an_existing_configmap_is_referenced_and_none_means_no_adapters(render: Any) -> None:
    gateway = _objects(render, {"configMapName": "carrier-adapters"})["CourierGateway"]
    assert gateway["spec"]["adapters"] == {"configMapName": "carrier-adapters"}
    assert "adapters" not in _objects(render, {})["CourierGateway"]["spec"]
