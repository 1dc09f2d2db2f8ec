"""How the commands print a stored attempt, shared by ``events`` and ``deadletters``.

Its own small module because ``deadletters`` is imported to build the argument parser: pulling
in the event story (and through it the store and the metrics registry) at that point would
create prometheus-client's files before the ingress has chosen its metrics directory.
"""

from __future__ import annotations

from typing import Any

from courier_gateway.timestamps import rfc3339

__all__ = ["attempt_json"]


def attempt_json(attempt: dict[str, Any]) -> dict[str, Any]:
    """One stored attempt as the commands print it (times in RFC 3339)."""
    return {
        "number": attempt.get("number"),
        "round": attempt.get("round", 1),
        "startedAt": rfc3339(attempt.get("startedAt")),
        "endedAt": rfc3339(attempt.get("endedAt")),
        "worker": attempt.get("worker"),
        "outcome": attempt.get("outcome"),
        "errorCode": attempt.get("errorCode"),
        "errorMessage": attempt.get("errorMessage"),
    }
