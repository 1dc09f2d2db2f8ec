"""Owned objects: their labels and owner references, and how drift is detected and undone.

The operator writes each owned object with server-side apply (:meth:`KubeClient.apply`) and
owns exactly the fields of its manifest. It applies again only when needed, so that a second
reconciliation writes nothing:

- some field of the manifest differs from the live object (drift: a hand edit, another tool) —
  "the manifest is contained in the live object": maps by key, keyed lists (containers, env,
  volumes, ports…) item by item by their key, so items other managers added are not drift, atomic
  lists whole, and resource quantities by value (the API server writes ``0.5`` back as ``500m``);
- or the live object says the operator owns a field the manifest no longer has (an option
  removed from the spec, a retired key): the next apply removes it.

Fields the API server adds (defaults, status, bookkeeping) and fields other managers own are
neither.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from courier_operator.fields import field_paths, item_key, list_keys, managed_paths
from courier_operator.kube import FIELD_MANAGER, KubeClient, Resource

__all__ = [
    "MANAGED_BY",
    "contains",
    "ensure",
    "in_sync",
    "owner_reference",
    "parse_quantity",
    "prune",
]

MANAGED_BY = "courier-gateway-operator"

_SUFFIXES = {
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"),
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
}  # fmt: skip
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]{0,2})$")
_QUANTITY_KEYS = frozenset({"cpu", "memory", "ephemeral-storage"})


def parse_quantity(value: object) -> Decimal | None:
    """A Kubernetes quantity (``500m``, ``1Gi``, ``2``) as a number, or None if it is not one."""
    match = _QUANTITY.match(str(value))
    if not match or (match.group(2) and match.group(2) not in _SUFFIXES):
        return None
    try:
        number = Decimal(match.group(1))
    except InvalidOperation:
        return None
    return number * Decimal(str(_SUFFIXES.get(match.group(2), 1)))


def contains(live: Any, desired: Any, key: str = "") -> bool:
    """Whether every field of ``desired`` has the same value in ``live``."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            name in live and contains(live[name], value, name)
            for name, value in desired.items()
            if value is not None
        )
    if isinstance(desired, list):
        keys = list_keys(key, desired) if desired else None
        if keys and all(isinstance(item, dict) for item in desired):
            if not isinstance(live, list):
                return False
            by_key = {item_key(item, keys): item for item in live if isinstance(item, dict)}
            return all(contains(by_key.get(item_key(item, keys)), item) for item in desired)
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(contains(have, want) for have, want in zip(live, desired, strict=True))
        )
    if key in _QUANTITY_KEYS and live != desired:
        return parse_quantity(live) == parse_quantity(desired) is not None
    return bool(live == desired)


def prune(manifest: Any) -> Any:
    """``manifest`` without its ``None`` values (an unset option is a field not sent)."""
    if isinstance(manifest, dict):
        return {key: prune(value) for key, value in manifest.items() if value is not None}
    if isinstance(manifest, list):
        return [prune(item) for item in manifest]
    return manifest


def in_sync(live: dict[str, Any], desired: dict[str, Any], subresource: str | None = None) -> bool:
    """Whether applying ``desired`` would change nothing the operator owns in ``live``."""
    scope = desired if subresource is None else {"status": desired.get("status")}
    if not contains(live, {k: v for k, v in scope.items() if k != "metadata"}):
        return False
    meta = desired.get("metadata") or {}
    owned = {key: meta[key] for key in ("labels", "annotations", "ownerReferences") if key in meta}
    if subresource is None and not contains(live.get("metadata") or {}, owned):
        return False
    mine = managed_paths(live, FIELD_MANAGER, subresource=subresource)
    return mine <= field_paths(desired, subresource=subresource)


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    """The reference that makes the owner's deletion delete the object (garbage collection)."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        # No blockOwnerDeletion: with the OwnerReferencesPermissionEnforcement admission plugin
        # (OpenShift's default) it needs update on the owner's finalizers, and foreground
        # deletion, the only thing it affects, is not how gateways are deleted.
    }


async def ensure(
    client: KubeClient, resource: Resource, desired: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    """Apply ``desired`` unless the live object is already in sync with it.

    Returns what happened (``created``, ``updated`` or ``unchanged``) and the live object.
    """
    manifest = prune(desired)
    meta = manifest["metadata"]
    live = await client.get(resource, meta["namespace"], meta["name"])
    if live is not None and in_sync(live, manifest):
        return "unchanged", live
    applied = await client.apply(resource, manifest)
    return ("created" if live is None else "updated"), applied
