"""Deleting named CourierGateways while the operator still runs (the chart's pre-delete hook).

A gateway carries the operator's finalizer, which only a running operator removes: deleted after
the operator, it would stay ``Terminating``. So with ``cleanup.enabled`` the chart runs
``courier-gateway cleanup --namespace NS --gateway NAME`` before ``helm uninstall`` removes the
operator: it deletes the gateway the chart created, and nothing else, and waits until the
operator has let it go. Gateways created any other way are never touched by an uninstall.
"""

from __future__ import annotations

import asyncio
import logging
import time

from courier_operator.kube import COURIER_GATEWAYS, KubeClient

__all__ = ["delete_gateways"]

log = logging.getLogger(__name__)


async def delete_gateways(
    client: KubeClient,
    namespace: str,
    names: list[str],
    *,
    wait_seconds: float,
    poll: float = 1.0,
) -> int:
    """Delete the named gateways of ``namespace``; return how many are still there after
    ``wait_seconds`` (0: all gone)."""
    for name in names:
        if await client.delete(COURIER_GATEWAYS, namespace, name):
            log.info(
                "deleted", extra={"kind": COURIER_GATEWAYS.kind, "object": f"{namespace}/{name}"}
            )
    deadline = time.monotonic() + wait_seconds
    while True:
        left = [
            f"{COURIER_GATEWAYS.kind} {namespace}/{name}"
            for name in names
            if await client.get(COURIER_GATEWAYS, namespace, name) is not None
        ]
        if not left or time.monotonic() >= deadline:
            if left:
                log.warning("still terminating: is the operator running?", extra={"left": left})
            return len(left)
        await asyncio.sleep(poll)
