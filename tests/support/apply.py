"""Server-side apply and field ownership for the emulated API (see :mod:`tests.support.kube`).

What a real API server does, for the fields the tests use:

- every write records who changed which fields in ``metadata.managedFields``: an apply under its
  ``fieldManager`` (operation ``Apply``), any other write under its ``fieldManager`` parameter or
  the user agent's product name (operation ``Update``), per subresource;
- an apply sets the fields of its configuration, merging maps by key and keyed lists
  (containers, env, volumes, ports, conditions…) item by item, and replacing atomic lists;
- it removes the fields its manager applied before and no longer applies, unless another manager
  owns them too;
- a field another manager owns with a different value is a conflict (409) unless the apply is
  forced, which moves the field to the applier;
- an apply to an object that does not exist creates it.

The field paths are those of :mod:`courier_operator.fields` (the ``FieldsV1`` format).
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

from courier_operator.fields import Path, decode_fields, encode_fields, field_paths, list_keys

__all__ = ["ApplyConflictError", "apply", "diff_paths", "manager_of", "record_update"]

Managers = dict[tuple[str, str, str | None], set[Path]]


class ApplyConflictError(Exception):
    """Fields another manager owns would change: what a real server answers with 409."""

    def __init__(self, conflicts: list[tuple[str, Path]]) -> None:
        described = "; ".join(
            f'conflict with "{manager}": .{".".join(p[2:] for p in path)}'
            for manager, path in conflicts
        )
        super().__init__(f"Apply failed with {len(conflicts)} conflict(s): {described}")


def manager_of(params: dict[str, str], headers: dict[str, str]) -> str:
    """The field manager of a request: its parameter, else the user agent's product name."""
    if params.get("fieldManager"):
        return params["fieldManager"]
    agent = {name.lower(): value for name, value in headers.items()}.get("user-agent", "unknown")
    return agent.split("/", 1)[0]


def _managers(obj: dict[str, Any] | None) -> Managers:
    found: Managers = {}
    for entry in ((obj or {}).get("metadata") or {}).get("managedFields") or []:
        key = (entry["manager"], entry["operation"], entry.get("subresource"))
        found[key] = found.get(key, set()) | decode_fields(entry.get("fieldsV1") or {})
    return found


def _encode(managers: Managers, api_version: str) -> list[dict[str, Any]]:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    entries = []
    for (manager, operation, subresource), paths in sorted(
        managers.items(), key=lambda item: (item[0][0], item[0][1], item[0][2] or "")
    ):
        if not paths:
            continue
        entry: dict[str, Any] = {
            "manager": manager,
            "operation": operation,
            "apiVersion": api_version,
            "time": now,
            "fieldsType": "FieldsV1",
            "fieldsV1": encode_fields(paths),
        }
        if subresource:
            entry["subresource"] = subresource
        entries.append(entry)
    return entries


# --- Reading and writing an object at a field path ---------------------------------------------


def _child(node: Any, part: str) -> Any:
    if node is None:
        return None
    if part.startswith("f:"):
        return node.get(part[2:]) if isinstance(node, dict) else None
    if part.startswith("k:") and isinstance(node, list):
        wanted = json.loads(part[2:])
        for item in node:
            if isinstance(item, dict) and all(
                item.get(key, "TCP" if key == "protocol" else None) == value
                for key, value in wanted.items()
            ):
                return item
    return None


def _value(obj: Any, path: Path) -> Any:
    node = obj
    for part in path:
        node = _child(node, part)
    return node


def _remove(obj: dict[str, Any], path: Path) -> None:
    """Remove the field or list item at ``path``, then the maps and lists it leaves empty."""
    parent = _value(obj, path[:-1])
    last = path[-1]
    if isinstance(parent, dict) and last.startswith("f:"):
        parent.pop(last[2:], None)
    elif isinstance(parent, list) and last.startswith("k:"):
        item = _child(parent, last)
        if item is not None:
            parent.remove(item)
    if len(path) > 1 and parent in ({}, []) and path[:-1] != ("f:metadata",):
        _remove(obj, path[:-1])


def _merge(live: Any, config: Any, name: str = "") -> Any:
    """``config`` applied onto ``live``: maps by key, keyed lists by item key, the rest replaced."""
    if isinstance(config, dict) and isinstance(live, dict):
        merged = dict(live)
        for key, value in config.items():
            merged[key] = _merge(live.get(key), value, key)
        return merged
    if isinstance(config, list) and isinstance(live, list):
        keys = list_keys(name, config or live)
        if keys and all(isinstance(item, dict) for item in [*config, *live]):
            merged_list = [copy.deepcopy(item) for item in live]
            for item in config:
                path = ("k:" + json.dumps(_key(item, keys), sort_keys=True, separators=(",", ":")),)
                existing = _child(merged_list, path[0])
                if existing is None:
                    merged_list.append(copy.deepcopy(item))
                else:
                    merged_list[merged_list.index(existing)] = _merge(existing, item)
            return merged_list
    return copy.deepcopy(config)


def _key(item: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {
        key: item.get(key, "TCP" if key == "protocol" else None)
        for key in sorted(keys)
        if key in item or key == "protocol"
    }


def _leaves(paths: set[Path]) -> set[Path]:
    """The paths no other path extends (values, not containers)."""
    return {path for path in paths if not any(o[: len(path)] == path and o != path for o in paths)}


# --- The operations ----------------------------------------------------------------------------


def apply(
    live: dict[str, Any] | None,
    config: dict[str, Any],
    *,
    manager: str,
    force: bool,
    subresource: str | None,
) -> dict[str, Any]:
    """The object after ``manager`` applied ``config`` to ``live`` (None: it does not exist)."""
    managers = _managers(live)
    mine = (manager, "Apply", subresource)
    wanted = field_paths(config, subresource=subresource)
    base = copy.deepcopy(live) if live is not None else {}
    conflicts = []
    for other, paths in managers.items():
        if other == mine or other[2] != subresource:
            continue
        for path in _leaves(paths) & wanted:
            if path[-1].startswith("f:") and _value(base, path) != _value(config, path):
                conflicts.append((other, path))
    if conflicts and not force:
        raise ApplyConflictError([(other[0], path) for other, path in conflicts])
    for other, path in conflicts:
        managers[other].discard(path)
    # What this manager applied before and no longer does goes, unless someone else owns it.
    others = set().union(*(paths for key, paths in managers.items() if key != mine))
    for path in sorted(_leaves(managers.get(mine, set())) - wanted, key=len, reverse=True):
        if not any(o[: len(path)] == path for o in others):
            _remove(base, path)
    for path in sorted(managers.get(mine, set()) - wanted, key=len, reverse=True):
        if path[-1].startswith("k:") and not any(o[: len(path)] == path for o in others):
            _remove(base, path)
    scope = {
        key: value
        for key, value in config.items()
        if (key == "status") == (subresource == "status") and key not in ("apiVersion", "kind")
    }
    if subresource is None:
        meta = config.get("metadata") or {}
        scope["metadata"] = {
            key: meta[key]
            for key in ("name", "namespace", "labels", "annotations", "ownerReferences")
            if key in meta
        }
    merged = _merge(base, scope)
    merged.setdefault("apiVersion", config.get("apiVersion"))
    merged.setdefault("kind", config.get("kind"))
    managers[mine] = wanted
    merged.setdefault("metadata", {})["managedFields"] = _encode(
        managers, str(config.get("apiVersion"))
    )
    return merged


def diff_paths(
    old: dict[str, Any] | None, new: dict[str, Any], subresource: str | None
) -> set[Path]:
    """The fields of ``new`` whose value differs from ``old`` (all of them when it is new)."""
    fields = field_paths(new, subresource=subresource)
    if old is None:
        return fields
    return {path for path in fields if _value(old, path) != _value(new, path)}


def record_update(
    old: dict[str, Any] | None,
    new: dict[str, Any],
    *,
    manager: str,
    subresource: str | None,
) -> list[dict[str, Any]]:
    """``managedFields`` after ``manager`` changed ``old`` into ``new`` by a non-apply write."""
    managers = _managers(old)
    changed = diff_paths(old, new, subresource)
    for paths in managers.values():
        paths -= changed
    key = (manager, "Update", subresource)
    managers[key] = managers.get(key, set()) | changed
    return _encode(managers, str(new.get("apiVersion")))
