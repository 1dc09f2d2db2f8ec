"""What every handler shares: the API client, Redis connections, locks and the Event poster."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from courier_operator.kube import KubeClient

__all__ = ["EventPoster", "OperatorContext"]

# (object, type, reason, message): kopf.event in the operator, a recorder in unit tests.
EventPoster = Callable[[dict[str, Any], str, str, str], None]


@dataclass
class OperatorContext:
    """Shared state of one operator process; build it once, close it at exit."""

    client: KubeClient
    post_event: EventPoster
    # The image of gateways whose spec names none (OPERATOR_IMAGE: the operator's own).
    default_image: str | None = None
    redis_timeout: float = 2.0
    _redis: dict[str, Redis] = field(default_factory=dict)
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)

    def now(self) -> datetime:
        """The current time (UTC)."""
        return datetime.now(UTC)

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        """One lock per object: timers and watch handlers of one gateway never interleave."""
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    def redis(self, url: str) -> Redis:
        """A pooled client for ``url`` (gateways sharing a Redis share the pool)."""
        client = self._redis.get(url)
        if client is None:
            client = Redis.from_url(
                url,
                socket_timeout=self.redis_timeout,
                socket_connect_timeout=self.redis_timeout,
            )
            self._redis[url] = client
        return client

    async def aclose(self) -> None:
        """Close Redis pools and the API client."""
        for client in self._redis.values():
            await client.aclose()
        self._redis.clear()
        await self.client.aclose()
