"""The CRDs: valid Kubernetes objects, columns that point at real fields, the operator's defaults.

Kubernetes applies a CRD's defaults before the operator sees an object; the operator applies the
same ones for objects that never went through them. Both lists must agree, field by field.
"""

from __future__ import annotations

import re
from typing import Any

import celpy
import kubernetes_validate
import pytest

from courier_operator.gateway.spec import parse_gateway_spec
from courier_operator.replay.job import parse_replay_spec
from tests.support.crds import crd_for, crds


def test_every_crd_is_a_valid_custom_resource_definition() -> None:
    documents = crds()
    assert {doc["metadata"]["name"] for doc in documents} >= {
        "couriergateways.gateway.courier.dev",
        "replayrequests.gateway.courier.dev",
        "kopfpeerings.kopf.dev",
    }
    for document in documents:
        kubernetes_validate.validate(document, "1.30.0", strict=True)


def _schema_at(schema: dict[str, Any], json_path: str) -> dict[str, Any] | None:
    node: dict[str, Any] | None = schema
    # Filters such as [?(@.type=="Ready")] select list items; only the field path matters here.
    for part in re.sub(r"\[[^\]]*\]", "[]", json_path).lstrip(".").split("."):
        name = part.split("[", 1)[0]
        assert node is not None
        node = node.get("properties", {}).get(name)
        if node is None:
            return None
        if "[" in part:
            node = node.get("items")
    return node


@pytest.mark.parametrize("kind", ["CourierGateway", "ReplayRequest"])
def test_printer_columns_read_declared_fields_and_the_status_is_a_subresource(kind: str) -> None:
    crd = crd_for(kind)
    (version,) = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}
    schema = version["schema"]["openAPIV3Schema"]
    for column in version["additionalPrinterColumns"]:
        if column["jsonPath"].startswith(".metadata."):
            continue
        assert _schema_at(schema, column["jsonPath"]) is not None, column
    assert crd["spec"]["names"]["shortNames"]


def test_a_replay_request_spec_is_immutable() -> None:
    spec = crd_for("ReplayRequest")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    rules = spec["properties"]["spec"]["x-kubernetes-validations"]
    assert {"rule": "self == oldSelf", "message": rules[0]["message"]} in rules


def _defaults(schema: dict[str, Any], path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    found: dict[tuple[str, ...], Any] = {}
    for name, node in (schema.get("properties") or {}).items():
        if "default" in node and node["default"] != {}:
            found[(*path, name)] = node["default"]
        found.update(_defaults(node, (*path, name)))
        if node.get("type") == "array" and isinstance(node.get("items"), dict):
            found.update(_defaults(node["items"], (*path, name, "[]")))
    return found


def _value(document: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        document = document[0] if part == "[]" else document[part]
    return document


def test_the_operator_applies_the_same_defaults_as_the_gateway_crd() -> None:
    schema = crd_for("CourierGateway")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    defaults = _defaults(schema["properties"]["spec"])
    minimal = {
        "image": "img:1",
        "redis": {"urlSecretRef": {"name": "r"}},
        "mongo": {"uriSecretRef": {"name": "m"}},
        "downstream": {},
        "signing": {"sources": [{"name": "dhl", "rotation": {}}]},
    }
    parsed = parse_gateway_spec(minimal).model_dump()
    assert len(defaults) > 20
    for path, default in defaults.items():
        assert _value(parsed, path) == default, path


def test_the_operator_applies_the_same_defaults_as_the_replay_crd() -> None:
    schema = crd_for("ReplayRequest")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    defaults = _defaults(schema["properties"]["spec"])
    parsed = parse_replay_spec({"gatewayRef": {"name": "g"}, "selector": {"all": True}})
    for path, default in defaults.items():
        assert _value(parsed.model_dump(), path) == default, path
    assert len(defaults) == 5


@pytest.mark.parametrize("kind", ["CourierGateway", "ReplayRequest"])
def test_conditions_have_the_shape_of_metav1_condition(kind: str) -> None:
    schema = crd_for(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    item = conditions["items"]
    assert item["required"] == ["type", "status", "reason", "message", "lastTransitionTime"]
    properties = item["properties"]
    assert properties["status"]["enum"] == ["True", "False", "Unknown"]
    assert properties["reason"]["pattern"] == "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
    assert properties["lastTransitionTime"]["format"] == "date-time"
    assert properties["observedGeneration"]["minimum"] == 0


def test_the_pod_settings_of_the_crd_are_the_operators() -> None:
    from courier_operator.gateway.spec import PodSecurity, PodSpec

    spec = crd_for("CourierGateway")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for component in ("ingress", "worker"):
        pod = spec["properties"]["spec"]["properties"][component]["properties"]["pod"]
        assert set(pod["properties"]) == set(PodSpec.model_fields), component
        security = pod["properties"]["securityContext"]["properties"]
        assert set(security) == set(PodSecurity.model_fields)
        # Never root, whatever the override: the restricted Pod Security Standard.
        assert security["runAsUser"]["minimum"] == 1
        assert security["seccompProfile"]["properties"]["type"]["enum"] == [
            "RuntimeDefault",
            "Localhost",
        ]
    # spec.image is optional: the operator's own image by default.
    assert "image" not in spec["properties"]["spec"]["required"]
    assert (
        parse_gateway_spec(
            {
                "redis": {"urlSecretRef": {"name": "r"}},
                "mongo": {"uriSecretRef": {"name": "m"}},
                "signing": {"sources": [{"name": "dhl"}]},
            },
            default_image="registry.example/courier-gateway:9.9.9",
        ).image
        == "registry.example/courier-gateway:9.9.9"
    )


def _cel_rules(node: Any, where: str = "") -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    if isinstance(node, dict):
        found += [(where, rule) for rule in node.get("x-kubernetes-validations") or []]
        for key, value in node.items():
            if key != "x-kubernetes-validations":
                found += _cel_rules(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _cel_rules(value, f"{where}/{index}")
    return found


def test_every_cel_rule_compiles_and_says_what_is_wrong() -> None:
    """A rule that does not compile makes the API server refuse the whole CRD."""
    environment = celpy.Environment()
    rules = [item for crd in crds() for item in _cel_rules(crd["spec"]["versions"])]
    assert len(rules) >= 8
    for where, rule in rules:
        environment.compile(rule["rule"])
        assert rule.get("message"), where
