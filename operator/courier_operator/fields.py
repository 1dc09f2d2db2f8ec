"""Field paths as server-side apply sees them: which fields a manifest sets, who owns which.

Server-side apply records, per field manager, the set of fields it owns (``managedFields``, in
the ``FieldsV1`` format). Maps are walked field by field; lists are either *maps* keyed by some
of their items' fields (containers by ``name``, env by ``name``, volume mounts by ``mountPath``,
ports by number and protocol, conditions by ``type``…), whose items are owned one by one, or
*atomic* (args, tolerations…), owned as a whole. The operator uses these paths to tell whether
its last apply still matches what it wants (see :mod:`courier_operator.objects`).

A path is a tuple of ``FieldsV1`` keys: ``("f:spec", "f:template", "f:spec", "f:containers",
'k:{"name":"ingress"}', "f:image")``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

__all__ = [
    "Path",
    "decode_fields",
    "encode_fields",
    "field_paths",
    "item_key",
    "list_keys",
    "managed_paths",
]

Path = tuple[str, ...]

# Lists that Kubernetes merges by key (x-kubernetes-list-type: map); every other list is atomic.
_LIST_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "imagePullSecrets": ("name",),
    "ownerReferences": ("uid",),
    "conditions": ("type",),
    "topologySpreadConstraints": ("topologyKey", "whenUnsatisfiable"),
}
# Metadata fields a manager can own; the rest is the API server's (identity, versions).
_METADATA = ("labels", "annotations", "ownerReferences", "finalizers")


def list_keys(name: str, items: list[Any]) -> tuple[str, ...] | None:
    """The key fields of list field ``name``, or None when the list is atomic."""
    if name == "ports":
        # Container ports are keyed by number and protocol, Service ports likewise by port.
        first = items[0] if items and isinstance(items[0], dict) else {}
        return ("containerPort", "protocol") if "containerPort" in first else ("port", "protocol")
    return _LIST_KEYS.get(name)


def item_key(item: dict[str, Any], keys: tuple[str, ...]) -> str:
    """The ``k:{...}`` path element of a list-map item (protocol defaults to TCP, as the API's)."""
    values = {
        key: item.get(key, "TCP" if key == "protocol" else None)
        for key in sorted(keys)
        if key in item or key == "protocol"
    }
    return "k:" + json.dumps(values, separators=(",", ":"), sort_keys=True)


def _walk(node: Any, path: Path) -> Iterator[Path]:
    if isinstance(node, dict) and node:
        for name, value in node.items():
            if value is None:
                continue
            yield from _walk_field(name, value, (*path, f"f:{name}"))
    else:
        yield path


def _walk_field(name: str, value: Any, path: Path) -> Iterator[Path]:
    keys = list_keys(name, value) if isinstance(value, list) else None
    if keys is None or not all(isinstance(item, dict) for item in value):
        yield from _walk(value, path)
        return
    for item in value:
        item_path = (*path, item_key(item, keys))
        yield item_path
        yield from _walk(item, item_path)


def field_paths(manifest: dict[str, Any], *, subresource: str | None = None) -> set[Path]:
    """The fields ``manifest`` sets, as an apply of it would own them.

    For the main resource: metadata's labels, annotations, owner references and finalizers, and
    every top-level field but ``status``; for the ``status`` subresource: ``status`` only.
    """
    found: set[Path] = set()
    for name, value in manifest.items():
        if value is None or name in ("apiVersion", "kind"):
            continue
        if subresource == "status" and name != "status":
            continue
        if subresource is None and name == "status":
            continue
        if name == "metadata":
            for meta in _METADATA:
                if value.get(meta) is not None:
                    found |= set(_walk_field(meta, value[meta], ("f:metadata", f"f:{meta}")))
            continue
        found |= set(_walk_field(name, value, (f"f:{name}",)))
    return found


def encode_fields(paths: set[Path]) -> dict[str, Any]:
    """``paths`` as a ``FieldsV1`` document (``.`` marks a list item owned as such)."""
    root: dict[str, Any] = {}
    for path in sorted(paths):
        node = root
        for part in path:
            node = node.setdefault(part, {})
        if path and path[-1].startswith("k:"):
            node["."] = {}
    return root


def decode_fields(document: dict[str, Any], path: Path = ()) -> set[Path]:
    """The paths of a ``FieldsV1`` document."""
    found: set[Path] = set()
    for part, child in document.items():
        if part == ".":
            found.add(path)
        elif not child:
            found.add((*path, part))
        else:
            found |= decode_fields(child, (*path, part))
            if part.startswith("k:"):
                found.add((*path, part))
    return found


def managed_paths(
    live: dict[str, Any], manager: str, *, operation: str = "Apply", subresource: str | None = None
) -> set[Path]:
    """The fields ``manager`` owns in ``live`` through ``operation`` (its ``managedFields``)."""
    found: set[Path] = set()
    for entry in (live.get("metadata") or {}).get("managedFields") or []:
        if (
            entry.get("manager") == manager
            and entry.get("operation") == operation
            and entry.get("subresource") == subresource
        ):
            found |= decode_fields(entry.get("fieldsV1") or {})
    return found
