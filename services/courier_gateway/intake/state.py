"""What one ingress process holds while it runs: clients, keys, the writer and health flags.

Dependency health is probed by a background task and cached, so ``/health`` and ``/ready``
answer instantly even while a dependency hangs (a liveness probe must never time out because
MongoDB is slow). Readiness depends only on Redis: the intake never touches the store, so a store
outage is reported but never stops intake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from courier_gateway.config import KeyRing, Settings
from courier_gateway.queue import IntakeWriter
from courier_gateway.queue.layout import QueueLayout
from courier_gateway.queue.registry import prepare_partitions
from courier_gateway.queue.topology import AsyncRedis

__all__ = ["Health", "IntakeState"]

log = logging.getLogger(__name__)

_PROBE_INTERVAL = 1.0
_PROBE_TIMEOUT = 1.0


@dataclass(slots=True)
class Health:
    """The last probe results: ``connected``, ``unavailable`` or ``not_configured``."""

    redis: str = "unknown"
    store: str = "unknown"


@dataclass(slots=True)
class IntakeState:
    """Per-process state kept on ``app.ctx.state``."""

    settings: Settings
    keyring: KeyRing
    redis: AsyncRedis
    writer: IntakeWriter
    layout: QueueLayout
    store: Any = None  # pymongo.AsyncMongoClient, when MONGO_URI is set
    health: Health = field(default_factory=Health)
    draining: bool = False
    #: Whether this process has recorded its partitions and their groups (done once Redis answers).
    prepared: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start_background(self) -> None:
        """Start the health probe and the key reloader."""
        loop = asyncio.get_running_loop()
        self.tasks.append(loop.create_task(self._probe_forever()))
        self.tasks.append(loop.create_task(self._reload_keys_forever()))

    async def stop_background(self) -> None:
        """Cancel the background tasks and wait for them."""
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def probe(self) -> None:
        """Check Redis and the store once and record the result."""
        before = self.health.redis
        self.health.redis = await self._check(self.redis.ping())
        if self.health.redis != "connected":
            # Redis may come back empty (restart, failover to a replica that lagged): record
            # the partitions and their groups again once it answers.
            self.prepared = False
        elif not self.prepared or before != "connected":
            self.prepared = await self._check(prepare_partitions(self.redis, self.layout)) == (
                "connected"
            )
        if self.store is None:
            self.health.store = "not_configured"
        else:
            self.health.store = await self._check(self.store.admin.command("ping"))

    @staticmethod
    async def _check(call: Any) -> str:
        try:
            async with asyncio.timeout(_PROBE_TIMEOUT):
                await call
        except (RedisError, OSError, TimeoutError, Exception):
            return "unavailable"
        return "connected"

    async def _probe_forever(self) -> None:
        while True:
            before = (self.health.redis, self.health.store)
            await self.probe()
            if (self.health.redis, self.health.store) != before:
                log.info(
                    "dependency state changed",
                    extra={"redis": self.health.redis, "store": self.health.store},
                )
            await asyncio.sleep(_PROBE_INTERVAL)

    async def _reload_keys_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.secrets_reload_seconds)
            try:
                self.keyring.reload()
            except Exception:
                # A reload must never kill the task: the previous keys stay in force.
                log.exception("signing key reload failed")
