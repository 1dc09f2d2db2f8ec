"""The chart's values: typed by values.schema.json, listed by the chart README, used by dev.

The schema accepts every value set the tests render and refuses wrong types, unknown keys,
values outside their enums, bounds or patterns, both as ``jsonschema`` reads it and as Helm
does at install. Every value in values.yaml has a schema node, every schema object closes its
keys, and the README table lists every value with its default, so none of the three can drift.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import jsonschema
import pytest
import yaml

from tests.delivery.conftest import CHART, VALUE_SETS, dev_values

SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)


def leaves(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """(path, value) of every value a user sets: scalars, lists and empty maps."""
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    else:
        yield path, node


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = SCHEMA["definitions"][node["$ref"].rsplit("/", 1)[1]]
    return node


def schema_at(path: tuple[str, ...]) -> dict[str, Any]:
    node = SCHEMA
    for key in path:
        node = resolve(node)
        assert key in node.get("properties", {}), f"no schema for {'.'.join(path)}"
        node = node["properties"][key]
    return resolve(node)


def test_the_schema_is_valid_draft_7() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_the_schema_accepts_every_value_set(chart: helm.Chart, name: str) -> None:
    merged = chart.merge_values(VALUE_SETS[name])
    assert list(VALIDATOR.iter_errors(merged)) == []
    assert list(VALIDATOR.iter_errors(VALUE_SETS[name])) == []
    chart.validate_schema(VALUE_SETS[name])


REFUSED: dict[str, dict[str, Any]] = {
    # Wrong types.
    "replicas as a string": {"operator": {"replicas": "2"}},
    "enabled as a string": {"gateway": {"enabled": "yes"}},
    "sidecar label value as a number": {"grafanaDashboard": {"sidecarLabelValue": 1}},
    "namespaces as a string": {"operator": {"watchNamespaces": "shipping,returns"}},
    "resources as a string": {"operator": {"resources": "small"}},
    # Unknown keys, at every depth.
    "unknown top-level key": {"replicaCount": 2},
    "typo in a gateway field": {"gateway": {"ingress": {"replica": 2}}},
    "unknown in-cluster key": {"redis": {"inCluster": {"password": "x"}}},
    "unknown source key": {"gateway": {"signing": {"sources": [{"name": "a", "secret": "x"}]}}},
    "unknown resource name": {"operator": {"resources": {"requests": {"gpu": 1}}}},
    "unknown security setting": {"securityContext": {"runAsRoot": True}},
    # Enums, bounds and patterns.
    "pull policy": {"image": {"pullPolicy": "Sometimes"}},
    "log level": {"operator": {"logLevel": "TRACE"}},
    "no operator": {"operator": {"replicas": 0}},
    "jitter above 1": {"gateway": {"retry": {"jitter": 1.5}}},
    "port out of range": {"networkPolicy": {"egress": {"redisPort": 70000}}},
    "downstream not http": {"gateway": {"downstream": {"url": "ftp://orders.example.com"}}},
    "source name with capitals": {"gateway": {"signing": {"sources": [{"name": "DHL"}]}}},
    "no source": {"gateway": {"signing": {"sources": []}}},
    "rate limit without burst": {
        "gateway": {"signing": {"sources": [{"name": "a", "rateLimit": {"perSecond": 1}}]}}
    },
    "bad quantity": {"redis": {"inCluster": {"persistence": {"size": "lots"}}}},
    "bad namespace": {"operator": {"watchNamespaces": ["Shipping"]}},
    "bad scrape interval": {"monitoring": {"interval": "often"}},
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_the_schema_refuses(chart: helm.Chart, case: str) -> None:
    values = REFUSED[case]
    assert list(VALIDATOR.iter_errors(chart.merge_values(values))), case
    with pytest.raises(helm.HelmValuesError):
        chart.render(values, name="courier-gateway", namespace="courier")


def test_every_value_has_a_schema() -> None:
    for path, value in leaves(DEFAULTS):
        node = schema_at(path)
        assert "type" in node or "anyOf" in node, ".".join(path)
        # The default itself is valid where it stands.
        standalone = {"definitions": SCHEMA["definitions"], **node}
        assert list(jsonschema.Draft7Validator(standalone).iter_errors(value)) == [], path


def test_every_schema_object_closes_its_keys() -> None:
    def objects(node: Any, where: str) -> Iterator[tuple[str, dict[str, Any]]]:
        if isinstance(node, dict):
            if node.get("type") == "object":
                yield where, node
            for key, value in node.items():
                yield from objects(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                yield from objects(value, f"{where}/{index}")

    found = list(objects(SCHEMA, "#"))
    assert len(found) > 40
    for where, node in found:
        # false for records; a value schema for maps (labels, annotations, node selectors).
        assert "additionalProperties" in node, where
        assert node["additionalProperties"] is False or "properties" not in node, where


def readme_rows() -> dict[str, tuple[str, str]]:
    text = (CHART / "README.md").read_text()
    section = text.split("## Values", 1)[1]
    rows = re.findall(r"^\| `([^`]+)` \| (\w+) \| `(.*?)` \| [^|]+\|$", section, flags=re.M)
    return {path: (kind, default) for path, kind, default in rows}


def type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    for python, name in ((int, "integer"), (float, "number"), (str, "string"), (list, "list")):
        if isinstance(value, python):
            return name
    return "object"


def test_the_readme_lists_every_value_with_its_default() -> None:
    rows = readme_rows()
    values = {".".join(path): value for path, value in leaves(DEFAULTS)}
    assert sorted(rows) == sorted(values)
    for path, value in values.items():
        kind, default = rows[path]
        assert kind == type_name(value), path
        assert json.loads(default) == value, path


def test_the_dev_values_run_everything_on_kind(chart: helm.Chart) -> None:
    values = chart.merge_values(dev_values())
    assert values["image"]["repository"] == "courier-gateway"
    assert values["image"]["tag"] == "dev"
    assert values["image"]["pullPolicy"] in {"IfNotPresent", "Never"}
    assert values["redis"]["inCluster"]["enabled"] is True
    assert values["mongo"]["inCluster"]["enabled"] is True
    assert values["gateway"]["enabled"] is True
    assert [source["name"] for source in values["gateway"]["signing"]["sources"]] == ["courier"]
    assert values["grafanaDashboard"]["enabled"] is True
    assert values["gateway"]["ingress"]["replicas"] == 1
