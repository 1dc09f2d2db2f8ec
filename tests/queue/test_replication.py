"""``ENQUEUE_MIN_REPLICAS`` against a real primary and a replica that can be frozen (SIGSTOP).

- a write the frozen replica has not confirmed is refused (503), and so is every re-sent copy
  that reaches another ingress (another connection), even though its duplicate hint is already
  there: a duplicate answer is an acknowledgement too, and it must not vouch for an original
  that no replica holds (WAIT only counts the writes of its own connection);
- once the replica runs again, the re-sent copy is answered as the duplicate it is, and the
  original entry is on the replica.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from courier_gateway.devstack.processes import free_port
from courier_gateway.queue.intake_writer import IntakeUnavailableError, IntakeWriter, WriteRequest
from courier_gateway.queue.layout import QueueLayout
from tests.support.topologies import HOST, RedisNode, _binary, _poll, _server_arguments


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisNode, RedisNode]]:
    """A primary and its replica, started fresh for this module."""
    directory = tmp_path_factory.mktemp("replication")
    server = _binary("redis-server")
    primary_port, replica_port = free_port(), free_port()
    primary = RedisNode(
        "redis-primary",
        directory / "primary",
        primary_port,
        [server, *_server_arguments(primary_port, directory / "primary")],
    )
    replica = RedisNode(
        "redis-replica",
        directory / "replica",
        replica_port,
        [
            server,
            *_server_arguments(replica_port, directory / "replica"),
            *("--replicaof", HOST, str(primary_port)),
        ],
    )
    try:
        primary.start()
        replica.start()
        assert _poll(lambda: primary.role()[2] != [], timeout=15), "the replica never connected"
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


@pytest_asyncio.fixture
async def client(pair: tuple[RedisNode, RedisNode]) -> AsyncIterator[Redis]:
    redis = Redis(host=HOST, port=pair[0].port)
    yield redis
    await redis.aclose()


def _event(key: str) -> WriteRequest:
    return WriteRequest(
        message=b"an event",
        tenant="acme",
        idempotency_key=key,
        per_second=0,
        burst=0,
        hint_ttl=600,
    )


@pytest.mark.asyncio
async def test_a_duplicate_is_not_acknowledged_before_its_original_is_replicated(
    pair: tuple[RedisNode, RedisNode], client: Redis, tmp_path: Path
) -> None:
    primary, replica = pair
    layout = QueueLayout(f"q-{tmp_path.name}", 2)
    writer = IntakeWriter(client, layout, timeout_seconds=1.5, min_replicas=1)
    writer.start()
    # The courier's re-send lands on another ingress: its own connection to the primary.
    elsewhere = Redis(host=HOST, port=primary.port)
    other = IntakeWriter(elsewhere, layout, timeout_seconds=1.5, min_replicas=1)
    other.start()
    assert replica.child is not None
    process = replica.child.process
    try:
        # Both connections have written (and loaded their scripts) before the replica freezes.
        assert (await writer.write(_event("warm-up"))).status == "queued"
        assert (await other.write(_event("warm-up-2"))).status == "queued"
        process.send_signal(signal.SIGSTOP)
        try:
            with pytest.raises(IntakeUnavailableError, match="0 of 1 Redis replicas"):
                await writer.write(_event("order-1"))
            # The hint is on the primary now; the courier re-sends, twice.
            partition = layout.partition_for("acme", "order-1")
            assert await client.exists(partition.hint_key("acme", "order-1"))
            for _ in range(2):
                with pytest.raises(IntakeUnavailableError, match="0 of 1 Redis replicas"):
                    await other.write(_event("order-1"))
        finally:
            process.send_signal(signal.SIGCONT)
        answer = await other.write(_event("order-1"))
        assert answer.status == "duplicate"
        # The original (written while the replica was frozen) is on the replica.
        with replica.client() as on_replica:
            assert _poll(lambda: on_replica.xlen(partition.stream) >= 1, timeout=5)
            entries = on_replica.xrange(partition.stream)
        assert any(fields.get("data") == "an event" for _, fields in entries)
    finally:
        await writer.close()
        await other.close()
        await elsewhere.aclose()
