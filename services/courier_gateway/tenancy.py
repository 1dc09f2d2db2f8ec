"""Sources as tenants: how everything stored or remembered for an event is namespaced.

The tenant of an event is the source that authenticated it: the URL's ``{source}``, whose key
verified the signature. The body's ``source`` field is descriptive only. Every id the gateway
keeps for an event (the intake's duplicate hint, the ledger entry, the dead letter) is scoped by
the tenant, and the shipment by the source's shipment namespace (its own name unless the sources
file shares one on purpose), so two sources can use the same ``eventId``, ``idempotencyKey`` or
``shipmentId`` without ever seeing each other.

Scoped ids join namespace and key with a space, which no key or id may contain (they are
printable ASCII without spaces), so the join is unambiguous. The default source ``courier`` keeps
bare keys: its namespace is the one every document lived in before tenancy, so data written by
earlier versions stays valid for it without a migration, and no other namespace can collide
with it (theirs always contain the space).
"""

from __future__ import annotations

__all__ = ["DEFAULT_SOURCE", "scoped", "split_scoped"]

#: The default source: the original gateway's ``/v1/events/courier``.
DEFAULT_SOURCE = "courier"

_SEPARATOR = " "


def scoped(namespace: str, key: str) -> str:
    """The stored id of ``key`` in ``namespace`` (bare for the default source's namespace)."""
    if namespace == DEFAULT_SOURCE:
        return key
    return f"{namespace}{_SEPARATOR}{key}"


def split_scoped(stored_id: str) -> tuple[str, str]:
    """The ``(namespace, key)`` a stored id was made from (inverse of :func:`scoped`)."""
    namespace, separator, key = stored_id.partition(_SEPARATOR)
    if not separator:
        return DEFAULT_SOURCE, stored_id
    return namespace, key
