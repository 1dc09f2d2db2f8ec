"""Riding out an outage of a dependency (Redis, the store): retry with backoff, know the state.

A :class:`Dependency` remembers whether the last call to it worked; the worker's ``/ready``
reads that. Calls made through :meth:`Dependency.call` that fail *because the dependency is
unreachable* (connection refused or reset, a timeout, Redis still loading its AOF, a read-only
replica during a fail-over, no MongoDB server to select) are retried after a capped, jittered,
exponentially growing delay; any other error propagates at once. The change of state is logged
once each way (a WARNING when it goes, an INFO with the downtime when it is back), never once
per attempt: a minute-long outage writes two lines, not thousands.

Every Redis loop of the worker goes through one ``Dependency``: the stream read (whatever
streams it reads), acknowledgements, the retry mover, trimming and the gauges.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from pymongo.errors import AutoReconnect, ConnectionFailure, NetworkTimeout
from redis.exceptions import (
    ClusterDownError,
    ReadOnlyError,
    RedisClusterException,
    SlotNotCoveredError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["REDIS_UNAVAILABLE", "STORE_UNAVAILABLE", "Backoff", "Dependency"]

log = logging.getLogger("courier_gateway.dependency")

T = TypeVar("T")

#: Errors that mean "Redis is not reachable now", not "the request is wrong". ``OSError``
#: covers refused and reset connections that surface before redis-py wraps them (and the
#: built-in ``TimeoutError``); ``BusyLoadingError`` (AOF loading) and Sentinel's
#: ``MasterNotFoundError`` are ``ConnectionError``s; a cluster without a primary for a slot
#: (mid-failover) answers ``CLUSTERDOWN`` or ``TRYAGAIN``, and a cluster client that reaches
#: no node at all raises ``RedisClusterException`` ("cannot be connected").
REDIS_UNAVAILABLE: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    ClusterDownError,
    TryAgainError,
    SlotNotCoveredError,
    RedisClusterException,
    OSError,
)

#: The store's equivalent (``ServerSelectionTimeoutError`` and ``NetworkTimeout`` included).
STORE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    AutoReconnect,
    ConnectionFailure,
    NetworkTimeout,
)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with jitter: ``min(cap, base * 2**(n-1))`` times 0.5-1.

    The jitter keeps the workers of a fleet from reconnecting in lock-step when Redis comes
    back; the cap bounds how long a worker sleeps after the dependency is back (at most
    ``cap`` seconds, 5 by default).
    """

    base: float = 0.1
    cap: float = 5.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1-based)."""
        ceiling = min(self.cap, self.base * 2.0 ** min(max(failures, 1) - 1, 30))
        return ceiling * random.uniform(0.5, 1.0)  # noqa: S311 - not cryptographic


class Dependency:
    """A dependency's reachability as this process last saw it, and retries around calls."""

    def __init__(
        self,
        name: str,
        unavailable: tuple[type[BaseException], ...],
        *,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self.unavailable = unavailable
        self.backoff = backoff or Backoff()
        self._down_since: float | None = None

    @property
    def reachable(self) -> bool:
        """False from a call that found it unreachable until the next call that worked."""
        return self._down_since is None

    def succeeded(self) -> None:
        """A call worked: note that it is back (logged once)."""
        if self._down_since is not None:
            down = time.monotonic() - self._down_since
            self._down_since = None
            log.info(
                "dependency reachable again",
                extra={"dependency": self.name, "downSeconds": round(down, 3)},
            )

    def failed(self, error: BaseException) -> None:
        """A call found it unreachable: note it (logged once, without a traceback)."""
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "dependency unreachable; retrying with backoff",
                extra={"dependency": self.name, "error": _describe(error)},
            )

    async def call(self, work: Callable[[], Awaitable[T]], *, patience: float | None = None) -> T:
        """Run ``work()`` until it succeeds, waiting out unavailability.

        With ``patience`` (seconds), give up once the next wait would end after it and raise
        the last error; without, keep trying (the caller is cancelled to stop it).
        """
        deadline = None if patience is None else time.monotonic() + patience
        failures = 0
        while True:
            try:
                result = await work()
            except self.unavailable as error:
                self.failed(error)
                failures += 1
                delay = self.backoff.delay(failures)
                if deadline is not None and time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                continue
            self.succeeded()
            return result


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__
