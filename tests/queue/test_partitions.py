"""Partitioned queues on one Redis: the layout, the intake writer, and a partition count change.

- the layout: one partition keeps the historical keys; several (or any cluster) share a hash
  tag per partition, spread over the slot ranges; an event's partition is stable;
- the writer (real Redis): each event lands in its partition's stream with its hint beside it;
  a duplicate is found whichever request repeats it; a source's rate limit holds exactly across
  partitions; a request's events may span partitions; ``ENQUEUE_MIN_REPLICAS`` with no replica
  refuses the acknowledgement;
- end to end: ingress and worker with four partitions process everything exactly once; events
  left in the old partitions after a change to two are still processed (the registry).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from redis.asyncio import Redis
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from courier_gateway.queue.intake_writer import (
    BatchWrite,
    IntakeUnavailableError,
    IntakeWriter,
    WriteRequest,
)
from courier_gateway.queue.layout import QueueLayout
from courier_gateway.queue.state import read_queue_state
from tests.conftest import StartGateway
from tests.support.servers import RedisServer, StoreServer
from tests.support.signing import event
from tests.support.stack import StackEnv, post_events


def _slot(key: str) -> int:
    return int(key_slot(key.encode()))


# --- the layout ---------------------------------------------------------------------------


def test_one_partition_keeps_the_historical_keys() -> None:
    layout = QueueLayout("courier-events")
    (partition,) = layout.partitions
    assert partition.stream == "courier-events"
    assert partition.hint_key("acme", "k1") == "cg:seen:acme:k1"
    assert layout.rate_key("acme") == "cg:ratelimit:acme"
    assert layout.partition_for("acme", "anything") is partition


def test_partitions_share_a_tag_per_partition_and_spread_over_the_slots() -> None:
    layout = QueueLayout("courier-events", 6)
    assert len(set(layout.streams)) == 6
    for index, partition in enumerate(layout.partitions):
        slot = _slot(partition.stream)
        assert (
            slot == _slot(f"{partition.stream}:retries") == _slot(f"{partition.stream}:deferrals")
        )
        assert slot == _slot(partition.hint_key("acme", "order-1:evt_1"))
        # Equal slot ranges, one per partition: three primaries get two partitions each.
        assert (
            index * REDIS_CLUSTER_HASH_SLOTS // 6
            <= slot
            < (index + 1) * REDIS_CLUSTER_HASH_SLOTS // 6
        )
    assert len({_slot(layout.rate_key(name)) for name in ("a", "b", "carrier-x")}) == 1


def test_a_cluster_is_tagged_even_with_one_partition() -> None:
    (partition,) = QueueLayout("courier-events", 1, tagged=True).partitions
    assert partition.stream.startswith("{") and partition.stream != "courier-events"
    assert _slot(partition.stream) == _slot(partition.hint_key("a", "k"))


def test_the_partition_of_an_event_is_stable_and_every_partition_is_used() -> None:
    layout = QueueLayout("q", 4)
    again = QueueLayout("q", 4)
    chosen = Counter(layout.partition_for("acme", f"key-{i}").index for i in range(4000))
    assert set(chosen) == {0, 1, 2, 3}
    assert min(chosen.values()) > 800  # ~1000 each
    for i in range(100):
        assert layout.partition_for("acme", f"key-{i}") == again.partition_for("acme", f"key-{i}")
    # The source takes part: two tenants' equal keys are independent choices.
    differs = sum(
        layout.partition_for("a", f"k{i}").index != layout.partition_for("b", f"k{i}").index
        for i in range(200)
    )
    assert differs > 100


# --- the writer on a real Redis -----------------------------------------------------------


@pytest_asyncio.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


def _request(tenant: str, key: str, **limits: float) -> WriteRequest:
    return WriteRequest(
        message=f"message {tenant} {key}".encode(),
        tenant=tenant,
        idempotency_key=key,
        per_second=limits.get("per_second", 0.0),
        burst=int(limits.get("burst", 0)),
        hint_ttl=600,
    )


@pytest.mark.asyncio
async def test_events_land_in_their_partition_with_their_hint(redis: Redis, tmp_path: Path) -> None:
    layout = QueueLayout(f"q-{tmp_path.name}", 4)
    writer = IntakeWriter(redis, layout, timeout_seconds=5)
    writer.start()
    try:
        keys = [f"order-{i}:evt_{i}" for i in range(120)]
        outcomes = await asyncio.gather(*(writer.write(_request("acme", k)) for k in keys))
        assert {o.status for o in outcomes} == {"queued"}
        for key, outcome in zip(keys, outcomes, strict=True):
            partition = layout.partition_for("acme", key)
            assert await redis.xrange(partition.stream, outcome.entry_id, outcome.entry_id)
            assert (await redis.get(partition.hint_key("acme", key))).decode() == outcome.entry_id
        lengths = [await redis.xlen(stream) for stream in layout.streams]
        assert sum(lengths) == 120 and min(lengths) > 10
        # The same keys again, now in one request spanning every partition: all duplicates.
        again = await writer.write_batch(
            BatchWrite(
                messages=tuple(b"again" for _ in keys[:40]),
                idempotency_keys=tuple(keys[:40]),
                tenant="acme",
                per_second=0,
                burst=0,
                hint_ttl=600,
            )
        )
        assert {o.status for o in again} == {"duplicate"}
        # Another tenant's equal keys are its own.
        other = await writer.write(_request("globex", keys[0]))
        assert other.status == "queued"
        assert sum([await redis.xlen(stream) for stream in layout.streams]) == 121
    finally:
        await writer.close()


@pytest.mark.asyncio
async def test_a_rate_limit_holds_exactly_across_partitions(redis: Redis, tmp_path: Path) -> None:
    layout = QueueLayout(f"q-{tmp_path.name}", 6)
    writer = IntakeWriter(redis, layout, timeout_seconds=5)
    writer.start()
    try:
        # Burst 20 at 0.01/s: exactly 20 admitted whichever partitions the 60 keys map to.
        requests = [_request("acme", f"k{i}", per_second=0.01, burst=20) for i in range(60)]
        outcomes = await asyncio.gather(*(writer.write(r) for r in requests))
        statuses = Counter(o.status for o in outcomes)
        assert statuses == {"queued": 20, "limited": 40}
        assert all(o.retry_after >= 1 for o in outcomes if o.status == "limited")
        # Another source has its own bucket.
        assert (await writer.write(_request("globex", "k0", per_second=0.01, burst=1))).status == (
            "queued"
        )
    finally:
        await writer.close()


@pytest.mark.asyncio
async def test_min_replicas_without_a_replica_is_never_acknowledged(
    redis: Redis, tmp_path: Path
) -> None:
    for count in (1, 3):
        layout = QueueLayout(f"q-{tmp_path.name}-{count}", count)
        writer = IntakeWriter(redis, layout, timeout_seconds=2, min_replicas=1)
        writer.start()
        try:
            with pytest.raises(IntakeUnavailableError, match="0 of 1 Redis replicas"):
                await writer.write(_request("acme", "k1"))
        finally:
            await writer.close()


# --- end to end ---------------------------------------------------------------------------


def test_four_partitions_process_everything_once_and_a_smaller_count_drains_the_old_ones(
    start: StartGateway, redis_server: RedisServer, store_server: StoreServer
) -> None:
    stack = StackEnv.create(redis_server, store_server, QUEUE_PARTITIONS="4")
    ingress = start("ingress", stack.env)
    worker = start("worker", stack.env)
    first = [event() for _ in range(40)]
    assert {r.status_code for r in post_events(stack.url, first)} == {202}
    assert stack.wait_terminal(40, timeout=60)
    worker.stop()

    # Events accepted while no worker runs stay in the four old partitions...
    left = [event() for _ in range(30)]
    assert {r.status_code for r in post_events(stack.url, left)} == {202}
    ingress.stop()
    client = redis_server.client()
    layout = QueueLayout(stack.env["QUEUE_STREAM"], 4)
    assert sum(client.xlen(stream) for stream in layout.streams) == 70
    # ...and two partitions from now on: the new workers read the registry, so all are done.
    smaller = {**stack.env, "QUEUE_PARTITIONS": "2"}
    start("ingress", smaller)
    start("worker", smaller)
    later = [event() for _ in range(10)]
    assert {r.status_code for r in post_events(stack.url, later)} == {202}
    assert stack.wait_terminal(80, timeout=60)
    statuses = Counter(r["status"] for r in stack.find("processed_events"))
    assert statuses == {"processed": 80}
    registered = {s.decode() for s in client.smembers(f"{stack.env['QUEUE_STREAM']}:partitions")}
    assert registered == {*layout.streams, *QueueLayout(stack.env["QUEUE_STREAM"], 2).streams}

    async def lag() -> int:
        redis = Redis.from_url(redis_server.url)
        try:
            return (await read_queue_state(redis, stack.env["QUEUE_STREAM"])).lag
        finally:
            await redis.aclose()

    assert asyncio.run(lag()) == 0
    client.close()
