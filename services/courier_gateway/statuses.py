"""The shipment vocabulary the worker applies: event types and statuses (final ones included).

A module of its own, free of the store, so the ingress and the adapters can check against it
without importing the worker.
"""

from __future__ import annotations

__all__ = ["EVENT_TYPES", "FINAL_STATUSES", "STATUSES"]

EVENT_TYPES = frozenset({"shipment.status.updated", "shipment.created"})
FINAL_STATUSES = frozenset({"delivered", "returned", "cancelled"})
STATUSES = FINAL_STATUSES | {
    "created",
    "label_created",
    "picked_up",
    "in_transit",
    "at_hub",
    "customs_hold",
    "out_for_delivery",
    "delivery_failed",
    "exception",
    "on_hold",
    "returning",
}
