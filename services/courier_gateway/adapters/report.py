"""A mapping as JSON: the events, the unmapped items (with their originals) and the ignored ones."""

from __future__ import annotations

from typing import Any

import orjson

from courier_gateway.adapters.mapping import Ignored, Mapped, Mapping, Unmapped

__all__ = ["mapping_report"]


def mapping_report(mapping: Mapping) -> dict[str, Any]:
    """``{"events": [...], "unmapped": [...], "ignored": [...]}`` for tools and tests."""
    report: dict[str, Any] = {"events": [], "unmapped": [], "ignored": []}
    for item in mapping.results:
        if isinstance(item, Mapped):
            report["events"].append(item.event)
        elif isinstance(item, Unmapped):
            report["unmapped"].append(
                {
                    "check": item.check,
                    "message": item.message,
                    "event": item.event,
                    "original": orjson.loads(item.original),
                }
            )
        else:
            assert isinstance(item, Ignored)
            report["ignored"].append(item.reason)
    return report
