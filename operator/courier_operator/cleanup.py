"""Deleting every CourierGateway and ReplayRequest while the operator still runs.

Both kinds carry the operator's finalizer, which only a running operator removes. Removing the
operator first (``helm uninstall`` deletes everything at once) would leave them ``Terminating``;
so the chart's pre-delete hook runs ``courier-gateway cleanup`` first: it deletes them and waits
until the operator has let them go.
"""

from __future__ import annotations

import asyncio
import logging
import time

from courier_operator.kube import COURIER_GATEWAYS, REPLAY_REQUESTS, KubeClient

__all__ = ["delete_all"]

log = logging.getLogger(__name__)


async def delete_all(
    client: KubeClient, namespaces: list[str], *, wait_seconds: float, poll: float = 1.0
) -> int:
    """Delete them in ``namespaces`` (all when empty); return how many are still left."""
    for resource in (REPLAY_REQUESTS, COURIER_GATEWAYS):
        for namespace, name in await client.list_names(resource, namespaces):
            if await client.delete(resource, namespace, name):
                log.info("deleted", extra={"kind": resource.kind, "object": f"{namespace}/{name}"})
    deadline = time.monotonic() + wait_seconds
    while True:
        left = [
            f"{resource.kind} {namespace}/{name}"
            for resource in (REPLAY_REQUESTS, COURIER_GATEWAYS)
            for namespace, name in await client.list_names(resource, namespaces)
        ]
        if not left or time.monotonic() >= deadline:
            if left:
                log.warning("still terminating: is the operator running?", extra={"left": left})
            return len(left)
        await asyncio.sleep(poll)
