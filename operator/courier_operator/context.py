"""What every handler shares: the API client, Redis connections, locks and the Event poster."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from courier_gateway.config import ConfigError, Settings
from courier_gateway.queue.topology import AsyncRedis, connect
from courier_operator.kube import KubeClient

__all__ = ["EventPoster", "OperatorContext", "QueueAddress"]

# (object, type, reason, message): kopf.event in the operator, a recorder in unit tests.
EventPoster = Callable[[dict[str, Any], str, str, str], None]


@dataclass(frozen=True, slots=True)
class QueueAddress:
    """Where a gateway's queue is, as its pods are told: ``REDIS_MODE``, ``REDIS_URL`` (from its
    Secret; optional in sentinel mode), ``REDIS_SENTINELS`` and ``REDIS_SENTINEL_MASTER``.

    The key of the operator's client pool: gateways sharing a Redis share one client.
    """

    mode: str
    url: str | None
    sentinels: tuple[str, ...] = ()
    master: str = "mymaster"

    def settings(self) -> Settings:
        """The gateway's Redis settings; :class:`ConfigError` naming the variable when they are
        not usable (never echoing the URL, which may hold a password)."""
        values: dict[str, str] = {"REDIS_MODE": self.mode, "REDIS_SENTINEL_MASTER": self.master}
        if self.url:
            values["REDIS_URL"] = self.url
        if self.sentinels:
            values["REDIS_SENTINELS"] = ",".join(self.sentinels)
        try:
            settings = Settings.model_validate(values)
        except ValidationError as error:
            first = error.errors(include_url=False)[0]
            where = ".".join(str(part) for part in first["loc"]) or "REDIS_URL"
            raise ConfigError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None
        settings.require_redis()
        return settings


@dataclass
class OperatorContext:
    """Shared state of one operator process; build it once, close it at exit."""

    client: KubeClient
    post_event: EventPoster
    # The image of gateways whose spec names none (OPERATOR_IMAGE: the operator's own).
    default_image: str | None = None
    redis_timeout: float = 2.0
    _redis: dict[QueueAddress, AsyncRedis] = field(default_factory=dict)
    _locks: dict[tuple[str, str], asyncio.Lock] = field(default_factory=dict)

    def now(self) -> datetime:
        """The current time (UTC)."""
        return datetime.now(UTC)

    def lock(self, namespace: str, name: str) -> asyncio.Lock:
        """One lock per object: timers and watch handlers of one gateway never interleave."""
        return self._locks.setdefault((namespace, name), asyncio.Lock())

    def redis(self, address: QueueAddress) -> AsyncRedis:
        """A pooled client for the queue at ``address``, of the gateway's own topology (one
        server, the primary Sentinel names, or a Cluster, as the gateway's pods connect).

        Raises :class:`ConfigError` when the address cannot work (a bad URL in the Secret, a
        cluster on a unix socket, sentinel mode without sentinels).
        """
        client = self._redis.get(address)
        if client is None:
            client = connect(address.settings(), timeout=self.redis_timeout)
            self._redis[address] = client
        return client

    async def aclose(self) -> None:
        """Close Redis pools and the API client."""
        for client in self._redis.values():
            await client.aclose()
            # A sentinel-mode client also holds connections to the sentinels it asks.
            manager = getattr(getattr(client, "connection_pool", None), "sentinel_manager", None)
            for sentinel in getattr(manager, "sentinels", ()):
                await sentinel.aclose()
        self._redis.clear()
        await self.client.aclose()
