"""Worker replicas from the queue lag, within bounds, without flapping.

``recommended = clamp(ceil(lag / targetLagPerReplica), minReplicas, maxReplicas)``.
Scaling up happens at once: a backlog only grows while it waits. Scaling down happens only when
every recommendation for ``scaleDownStabilizationSeconds`` was lower than the current count, and
then to the highest of those recommendations (what Kubernetes' HPA does with its
stabilization window). The window's start and highest value are kept in the status, so an
operator restart does not reset it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

__all__ = ["ScaleDecision", "decide"]


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    """The replicas to run now, the recommendation behind it, and why."""

    replicas: int
    recommended: int
    reason: str
    candidate: dict[str, Any] | None  # the pending scale-down: {"replicas", "since"}

    @property
    def changed(self) -> bool:
        """Whether the decision differs from the count it started from."""
        return self.reason in ("ScaledUp", "ScaledDown")


def decide(
    *,
    current: int,
    lag: int,
    target_per_replica: int,
    minimum: int,
    maximum: int,
    window: timedelta,
    candidate: dict[str, Any] | None,
    candidate_since: datetime | None,
    now: datetime,
) -> ScaleDecision:
    """Decide the worker replicas; ``candidate`` is the scale-down pending from last time."""
    recommended = min(maximum, max(minimum, math.ceil(lag / target_per_replica)))
    current_in_bounds = min(maximum, max(minimum, current))
    if current_in_bounds != current:  # bounds changed in the spec: follow them at once
        reason = "ScaledUp" if current_in_bounds > current else "ScaledDown"
        return ScaleDecision(max(current_in_bounds, recommended), recommended, reason, None)
    if recommended > current:
        return ScaleDecision(recommended, recommended, "ScaledUp", None)
    if recommended == current:
        return ScaleDecision(current, recommended, "Steady", None)
    # A pending scale-down only counts while it is still one (the bounds may have moved since).
    pending = candidate if candidate and int(candidate["replicas"]) < current else None
    highest = max(recommended, int(pending["replicas"])) if pending else recommended
    since = candidate_since if pending and candidate_since else now
    if now - since >= window:
        return ScaleDecision(highest, recommended, "ScaledDown", None)
    return ScaleDecision(current, recommended, "Stabilizing", {"replicas": highest, "since": since})
