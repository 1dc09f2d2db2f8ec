"""Which Redis the queue lives on: one server, a primary watched by Sentinel, or a Cluster.

``REDIS_MODE`` picks the client, and nothing else in the gateway needs to know which one it
got: redis-py's Sentinel client asks the sentinels for the current primary on every new
connection (so it follows a failover), and its Cluster client routes each command by key slot
and refreshes the slot map when a primary moves. The one place a caller must know the topology
is ``WAIT`` (acknowledged by replicas): it has to travel on the connection that wrote, and in a
cluster that is a connection to the node owning the key; :func:`wait_target` names that node.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import redis
import redis.cluster
import redis.sentinel
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.connection import parse_url
from redis.exceptions import RedisError

from courier_gateway.config import Settings

__all__ = [
    "AsyncRedis",
    "ReplicationTimeoutError",
    "SyncRedis",
    "connect",
    "connect_sync",
    "describe",
    "is_cluster",
    "redis_variable",
    "replicated",
    "wait_target",
    "writer_node",
]

#: What :func:`connect` returns: the same commands either way, routed by slot in a cluster.
AsyncRedis: TypeAlias = Redis | RedisCluster
#: What :func:`connect_sync` returns (the operator-facing CLI commands are synchronous).
SyncRedis: TypeAlias = redis.Redis | redis.cluster.RedisCluster


def _credentials(settings: Settings) -> dict[str, Any]:
    """Username, password, database and TLS of ``REDIS_URL``, without its host (sentinel mode)."""
    if not settings.redis_url:
        return {}
    options: dict[str, Any] = parse_url(settings.redis_url)  # type: ignore[no-untyped-call]
    kept = {k: v for k, v in options.items() if k in {"username", "password", "db"}}
    if settings.redis_url.startswith("rediss://"):
        kept["ssl"] = True
    return kept


def connect(
    settings: Settings,
    *,
    timeout: float,
    health_check_interval: int = 0,
) -> AsyncRedis:
    """An asyncio client for the configured topology (``timeout``: socket and connect, s)."""
    settings.require_redis()
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": health_check_interval,
    }
    if settings.redis_mode == "sentinel":
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            settings.sentinels,
            sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
        )
        client: Redis = sentinel.master_for(
            settings.redis_sentinel_master, **options, **_credentials(settings)
        )
        return client
    assert settings.redis_url is not None
    if settings.redis_mode == "cluster":
        return RedisCluster.from_url(settings.redis_url, **options)
    return Redis.from_url(settings.redis_url, **options)


def connect_sync(settings: Settings, *, timeout: float) -> SyncRedis:
    """A blocking client for the configured topology (for the command-line tools)."""
    settings.require_redis()
    options: dict[str, Any] = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    if settings.redis_mode == "sentinel":
        sentinel_sync = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            settings.sentinels,
            sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
        )
        client: redis.Redis = sentinel_sync.master_for(  # type: ignore[no-untyped-call]
            settings.redis_sentinel_master, **options, **_credentials(settings)
        )
        return client
    assert settings.redis_url is not None
    if settings.redis_mode == "cluster":
        return redis.cluster.RedisCluster.from_url(settings.redis_url, **options)
    return redis.Redis.from_url(settings.redis_url, **options)


def is_cluster(client: AsyncRedis) -> bool:
    """Whether ``client`` routes by slot (commands touching several keys must share one)."""
    return isinstance(client, RedisCluster)


async def writer_node(client: AsyncRedis, key: str) -> ClusterNode | None:
    """:func:`wait_target`, after loading the slot map of a cluster client not used yet."""
    if isinstance(client, RedisCluster):
        await client.initialize()  # a no-op once the client knows the slots
    return wait_target(client, key)


def wait_target(client: AsyncRedis, key: str) -> ClusterNode | None:
    """The node a ``WAIT`` after a write of ``key`` must go to (None: the one connection)."""
    if isinstance(client, RedisCluster):
        return client.get_node_from_key(key)
    return None


def redis_variable(settings: Settings) -> str:
    """The variable to name when Redis cannot be reached (where the address came from)."""
    return "REDIS_SENTINELS" if settings.redis_mode == "sentinel" else "REDIS_URL"


def describe(settings: Settings) -> str:
    """Where the queue is, for start-up logs and error messages (no credentials)."""
    if settings.redis_mode == "sentinel":
        return f"sentinel master {settings.redis_sentinel_master} via {settings.redis_sentinels}"
    url = settings.redis_url or ""
    host = url.split("@", 1)[-1] if "@" in url else url.split("://", 1)[-1]
    return f"{settings.redis_mode} {host}"


class ReplicationTimeoutError(RedisError):
    """Fewer replicas than asked confirmed a write in time (the write itself may survive).

    Not an unavailable Redis (the primary answered): callers decide, rather than retrying it
    as an outage (re-running a write that did happen would only add copies).
    """


async def replicated(
    client: AsyncRedis,
    keys: Sequence[str],
    commands: Callable[[Any], object],
    *,
    replicas: int,
    wait_ms: int,
    raise_on_error: bool = True,
) -> list[Any]:
    """Run the writes ``commands`` adds to a pipeline; with ``replicas``, confirm them first.

    ``keys`` are the keys written, all owned by one node. The ``WAIT`` goes on the pipeline's
    connection to that node, and :class:`ReplicationTimeoutError` is raised when fewer than
    ``replicas`` replicas confirmed within ``wait_ms``, or when a key's slot moved meanwhile.
    Returns the replies of the writes (with ``raise_on_error=False`` a refused write's reply is
    its exception; otherwise the first one is raised).
    """
    node = await writer_node(client, keys[0]) if replicas else None
    async with client.pipeline(transaction=False) as pipe:
        commands(pipe)
        if replicas:
            options = {"target_nodes": node} if node is not None else {}
            pipe.execute_command("WAIT", replicas, wait_ms, **options)
        # raise_on_error=False: a cluster pipeline that re-sends failed commands would drop the
        # WAIT's target node; errors are raised below instead, the first one first.
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    confirmed = replies.pop() if replicas else replicas
    for reply in [*replies, confirmed] if raise_on_error else [confirmed]:
        if isinstance(reply, Exception):
            raise reply
    if node is not None and any(wait_target(client, k) != node for k in keys):
        raise ReplicationTimeoutError(
            "the written slots moved to another primary before Redis confirmed replication"
        )
    if int(confirmed) < replicas:
        raise ReplicationTimeoutError(
            f"{confirmed} of {replicas} Redis replicas confirmed the write within {wait_ms} ms"
        )
    return replies
