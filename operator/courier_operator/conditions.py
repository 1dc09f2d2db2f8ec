"""Status conditions in the Kubernetes convention (type, status, reason, message, time).

``lastTransitionTime`` changes only when a condition's status changes, so rewriting the same
conditions is a no-op and ``kubectl wait --for=condition=Ready`` behaves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Condition", "merge_conditions"]


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition as a handler decides it."""

    type: str
    status: bool | None  # None: Unknown
    reason: str
    message: str


def _status_text(status: bool | None) -> str:
    return "Unknown" if status is None else "True" if status else "False"


def merge_conditions(
    previous: list[dict[str, Any]] | None,
    conditions: list[Condition],
    *,
    now: str,
    generation: int | None,
) -> list[dict[str, Any]]:
    """The new condition list, keeping transition times of conditions whose status held."""
    before = {item.get("type"): item for item in previous or []}
    merged = []
    for condition in conditions:
        status = _status_text(condition.status)
        old = before.get(condition.type)
        since = old.get("lastTransitionTime") if old and old.get("status") == status else None
        entry: dict[str, Any] = {
            "type": condition.type,
            "status": status,
            "reason": condition.reason,
            "message": condition.message,
            "lastTransitionTime": since or now,
        }
        if generation is not None:
            entry["observedGeneration"] = generation
        merged.append(entry)
    return merged
