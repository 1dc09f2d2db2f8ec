"""The chart's CRDs as JSON Schemas, to validate custom resources offline.

Kubernetes validates a custom resource against its CRD's ``openAPIV3Schema``; ``jsonschema`` can
do the same once the Kubernetes extensions are translated: ``x-kubernetes-int-or-string`` becomes
"integer or string", ``nullable`` adds ``null``, and the other ``x-kubernetes-*`` keys go.

The CEL rules of ``x-kubernetes-validations`` are then evaluated as the API server would: on the
object with the schema's defaults applied, each rule with ``self`` bound to the value where it
stands (cel-python; transition rules, those naming ``oldSelf``, only when the stored object is
given). A rule that does not compile or fails to evaluate is an error of the CRD, not a refusal.

By default the schema is strict: an object with declared properties refuses unknown ones, unless
it says ``x-kubernetes-preserve-unknown-fields``. The API server would prune such fields silently
(or refuse them under kubectl's strict field validation); either way a manifest carrying one has
a bug, so tests should hear about it.

    validate_custom_resource(yaml.safe_load(manifest))   # raises jsonschema.ValidationError
    crd_schema("CourierGateway")["properties"]["spec"]
    broken_rules(doc)                                     # the messages of the CEL rules it breaks
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import celpy
import celpy.adapter
import jsonschema
import yaml

__all__ = [
    "CRD_DIRECTORY",
    "UnknownKindError",
    "apply_defaults",
    "broken_rules",
    "crd_for",
    "crd_schema",
    "crds",
    "validate_custom_resource",
]

CRD_DIRECTORY = (
    Path(__file__).resolve().parents[2] / "charts" / "courier-gateway" / "files" / "crds"
)


class UnknownKindError(LookupError):
    """No CRD in the chart defines this kind (or this apiVersion of it)."""


@cache
def _load() -> tuple[dict[str, Any], ...]:
    documents: list[dict[str, Any]] = []
    for path in sorted(CRD_DIRECTORY.glob("*.yaml")):
        documents.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return tuple(documents)


def crds() -> list[dict[str, Any]]:
    """Every CustomResourceDefinition under the chart's ``files/crds/`` (deep copies)."""
    return copy.deepcopy(list(_load()))


def crd_for(
    kind: str, group: str | None = None, *, among: Sequence[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The CRD defining ``kind`` (in ``group``, when several groups define one kind), among the
    chart's CRDs or the given ones (another release's, for upgrade tests)."""
    found = [
        crd
        for crd in (_load() if among is None else among)
        if crd["spec"]["names"]["kind"] == kind and group in (None, crd["spec"]["group"])
    ]
    if len(found) != 1:
        raise UnknownKindError(f"{len(found)} CRDs define kind {kind!r} (group {group!r})")
    return copy.deepcopy(found[0])


def _translate(node: Any, *, strict: bool) -> Any:
    if isinstance(node, list):
        return [_translate(item, strict=strict) for item in node]
    if not isinstance(node, dict):
        return node
    out = {
        key: _translate(value, strict=strict)
        for key, value in node.items()
        # "properties" maps field names, which may themselves start with x-kubernetes-.
        if not key.startswith("x-kubernetes-") and key != "nullable"
    }
    if "properties" in node:
        out["properties"] = {
            name: _translate(value, strict=strict) for name, value in node["properties"].items()
        }
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    preserve = node.get("x-kubernetes-preserve-unknown-fields", False)
    if strict and "properties" in node and not preserve and "additionalProperties" not in node:
        out["additionalProperties"] = False
    return out


def crd_schema(
    kind: str,
    version: str | None = None,
    *,
    strict: bool = True,
    among: Sequence[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The JSON Schema of ``kind`` (its storage version unless ``version`` is given)."""
    crd = crd_for(kind, among=among)
    versions = crd["spec"]["versions"]
    chosen = [
        item
        for item in versions
        if (item["name"] == version if version else item.get("storage", False))
    ]
    if not chosen:
        raise UnknownKindError(f"{kind} has no version {version!r}")
    schema: dict[str, Any] = _translate(chosen[0]["schema"]["openAPIV3Schema"], strict=strict)
    # Every object has these, whether its schema declares them or not.
    implicit = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}}
    implicit["metadata"] = {"type": "object"}
    schema["properties"] = {**implicit, **schema.get("properties", {})}
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    return schema


def _version_schema(
    kind: str, version: str | None, among: Sequence[dict[str, Any]] | None
) -> dict[str, Any]:
    crd = crd_for(kind, among=among)
    for item in crd["spec"]["versions"]:
        if item["name"] == version if version else item.get("storage", False):
            schema: dict[str, Any] = item["schema"]["openAPIV3Schema"]
            return schema
    raise UnknownKindError(f"{kind} has no version {version!r}")


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """``value`` with the schema's defaults filled in, as the API server stores it (a defaulted
    object gets its own properties' defaults too)."""
    if isinstance(value, dict) and "properties" in schema:
        out = dict(value)
        for name, node in schema["properties"].items():
            if name not in out and "default" in node:
                out[name] = copy.deepcopy(node["default"])
            if name in out:
                out[name] = apply_defaults(node, out[name])
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [apply_defaults(schema["items"], item) for item in value]
    return value


_CEL = celpy.Environment()


@cache
def _program(rule: str) -> Any:
    return _CEL.program(_CEL.compile(rule))


def _rules(
    schema: dict[str, Any], value: Any, old: Any, path: tuple[str | int, ...]
) -> list[tuple[tuple[str | int, ...], str]]:
    broken: list[tuple[tuple[str | int, ...], str]] = []
    for rule in schema.get("x-kubernetes-validations") or []:
        transition = "oldSelf" in rule["rule"]
        if transition and old is None:
            continue
        activation = {"self": celpy.adapter.json_to_cel(value)}
        if transition:
            activation["oldSelf"] = celpy.adapter.json_to_cel(old)
        result = _program(rule["rule"]).evaluate(activation)
        if not isinstance(result, celpy.celtypes.BoolType):
            raise TypeError(f"rule {rule['rule']!r} gave {result!r}, not a boolean")
        if not result:
            broken.append((path, rule.get("message") or f"failed rule: {rule['rule']}"))
    if isinstance(value, dict):
        for name, node in (schema.get("properties") or {}).items():
            if name in value:
                before = old.get(name) if isinstance(old, dict) else None
                broken += _rules(node, value[name], before, (*path, name))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            broken += _rules(schema["items"], item, None, (*path, index))
    return broken


def broken_rules(
    doc: dict[str, Any],
    *,
    old: dict[str, Any] | None = None,
    among: Sequence[dict[str, Any]] | None = None,
) -> list[tuple[tuple[str | int, ...], str]]:
    """(path, message) of every CEL rule ``doc`` breaks, after defaulting; ``old``: the stored
    object, for transition rules. ``doc`` must already fit the schema (see
    :func:`validate_custom_resource`), as the API server checks that first."""
    version = doc["apiVersion"].rpartition("/")[2]
    schema = _version_schema(doc["kind"], version, among)
    value = apply_defaults(schema, doc)
    before = apply_defaults(schema, old) if old is not None else None
    return _rules(schema, value, before, ())


def validate_custom_resource(
    doc: dict[str, Any],
    *,
    strict: bool = True,
    among: Sequence[dict[str, Any]] | None = None,
    old: dict[str, Any] | None = None,
) -> None:
    """Check ``doc`` as the API server would: its apiVersion served, its body per the schema,
    then the CEL rules (``old``: the stored object, for transition rules).

    Raises :class:`UnknownKindError` for a kind or version the chart's CRDs do not serve, and
    ``jsonschema.ValidationError`` (the first error, with its path) for a schema violation or a
    broken rule (its message).
    """
    group, _, version = doc["apiVersion"].rpartition("/")
    crd = crd_for(doc["kind"], group, among=among)
    served = [item["name"] for item in crd["spec"]["versions"] if item.get("served")]
    if version not in served:
        raise UnknownKindError(f"{doc['kind']} is served as {served}, not {version!r}")
    metadata = doc.get("metadata") or {}
    if not metadata.get("name"):
        raise jsonschema.ValidationError("metadata.name is required", path=["metadata"])
    if crd["spec"]["scope"] == "Cluster" and "namespace" in metadata:
        raise jsonschema.ValidationError(
            f"{doc['kind']} is cluster-scoped but has a namespace", path=["metadata", "namespace"]
        )
    schema = crd_schema(doc["kind"], version, strict=strict, among=among)
    validator = jsonschema.Draft7Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    if error is not None:
        raise error
    broken = broken_rules(doc, old=old, among=among)
    if broken:
        path, message = broken[0]
        raise jsonschema.ValidationError(message, path=list(path))
