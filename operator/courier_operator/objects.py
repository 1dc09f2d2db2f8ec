"""Owned objects: their labels and owner references, and how drift is detected and undone.

An owned object has drifted when some field the operator sets differs from the live object.
Fields the API server adds (defaults, status, bookkeeping) are not drift, so the check is
"desired is contained in live": dictionaries by key, lists element by element and of the same
length, and resource quantities by value (the API server writes ``0.5`` back as ``500m``).
Comparing this way is what makes a second reconciliation write nothing.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from courier_operator.kube import ApiError, KubeClient, Resource

__all__ = [
    "MANAGED_BY",
    "contains",
    "ensure",
    "merge_patch",
    "owner_reference",
    "parse_quantity",
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
    """Whether every field of ``desired`` has the same value in ``live``.

    A ``None`` in ``desired`` means "absent": how the operator takes back a field it set before
    (an image pull secret, a limit) — the merge patch sends the ``null`` that removes it.
    """
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(
            live.get(name) is None
            if value is None
            else name in live and contains(live[name], value, name)
            for name, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(live, list)
            and len(live) == len(desired)
            and all(contains(have, want) for have, want in zip(live, desired, strict=True))
        )
    if key in _QUANTITY_KEYS and live != desired:
        return parse_quantity(live) == parse_quantity(desired) is not None
    return bool(live == desired)


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
    """Create the object, or patch it back to ``desired`` if it drifted.

    Returns what was done (``created``, ``updated`` or ``unchanged``) and the live object.
    """
    namespace = desired["metadata"]["namespace"]
    name = desired["metadata"]["name"]
    live = await client.get(resource, namespace, name)
    if live is None:
        try:
            return "created", await client.create(resource, namespace, desired)
        except ApiError as error:
            if error.status != 409:
                raise
        # Created in between (by a retried request or another replica): compare with it.
        live = await client.get(resource, namespace, name)
        if live is None:
            raise ApiError(409, f"{resource.kind} {namespace}/{name} exists and vanished")
    if contains(live, desired):
        return "unchanged", live
    patch = {key: value for key, value in desired.items() if key not in ("apiVersion", "kind")}
    patched = await client.patch(resource, namespace, name, patch)
    if patched is None:  # deleted in between: the next reconciliation creates it
        return "updated", live
    return "updated", patched


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch that turns ``old`` into ``new`` (``None`` removes a key)."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            nested = merge_patch(before, value)
            if nested:
                patch[key] = nested
        elif key not in old or before != value:
            patch[key] = value
    return patch
