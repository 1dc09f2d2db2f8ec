"""Stream maintenance never loses work: trimming and consumer clean-up against a real Redis.

What is proved here, against a private ``redis-server`` and (for the last two) real gateway
processes:

- :func:`trim_acknowledged` never removes an entry that is pending (delivered, unacknowledged)
  in any consumer group, nor one that some group has not been delivered yet: with pending
  entries in the middle of acknowledged ones, with a second group that lags behind, and for
  random sequences of adds, reads, acknowledgements and trims across one or two groups
  (Hypothesis). It still makes progress (below the oldest entry anyone needs, at most the entry
  at a group's last-delivered id survives), it is idempotent, and a stream with no consumer
  group is never trimmed (``-1``). Ids are compared as the two 64-bit integers they are, so a
  pending entry is kept even when its sequence number is beyond a double's exact range.
- :func:`remove_gone_consumers` removes only consumers idle past the threshold that hold nothing
  pending; an idle consumer that still holds pending entries is kept.
- A real worker keeps its stream bounded while it runs: after each wave of events the stream's
  length falls back to a small bound, and every event is processed.
- A real worker reclaims the entries of a consumer that died holding them, with no new message
  arriving on the stream, within the idle timeout plus a margin.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis

from courier_gateway.queue.broker import CONSUMER_GROUP
from courier_gateway.queue.maintenance import remove_gone_consumers, trim_acknowledged
from tests.conftest import StartGateway
from tests.support.servers import RedisServer, StoreServer, wait_for
from tests.support.signing import event
from tests.support.stack import StackEnv, post_events

PROPERTY = settings(
    deadline=None,
    database=None,
    derandomize=True,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
async def client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    redis = Redis.from_url(redis_server.url)
    try:
        yield redis
    finally:
        await redis.aclose()


def new_stream() -> str:
    return f"maint-{uuid.uuid4().hex[:12]}"


def order(entry_id: str) -> tuple[int, int]:
    """A stream id as a comparable ``(ms, seq)`` pair."""
    ms, seq = entry_id.split("-")
    return int(ms), int(seq)


async def add(redis: Redis, stream: str, count: int) -> list[str]:
    return [(await redis.xadd(stream, {"data": b"x"})).decode() for _ in range(count)]


async def entries(redis: Redis, stream: str) -> list[str]:
    return [entry_id.decode() for entry_id, _ in await redis.xrange(stream)]


async def read(redis: Redis, stream: str, group: str, consumer: str, count: int) -> list[str]:
    fetched = await redis.xreadgroup(group, consumer, {stream: ">"}, count=count)
    return [entry_id.decode() for _, batch in fetched or [] for entry_id, _ in batch]


async def pending(redis: Redis, stream: str, group: str) -> set[str]:
    rows = await redis.xpending_range(stream, group, min="-", max="+", count=10_000)
    return {row["message_id"].decode() for row in rows}


# --- trim_acknowledged: hand-crafted states ------------------------------------------------


async def test_pending_entries_in_the_middle_are_never_trimmed(client: Redis) -> None:
    stream = new_stream()
    ids = await add(client, stream, 10)
    await client.xgroup_create(stream, "g", id="0")
    assert await read(client, stream, "g", "c1", 7) == ids[:7]
    assert await read(client, stream, "g", "c2", 1) == [ids[7]]  # ids[8:] stay undelivered

    # The oldest entry is still pending and everything else delivered is acknowledged except
    # ids[3], ids[5] and ids[7]: nothing may be trimmed, since ids[0] is the floor.
    await client.xack(stream, "g", ids[1], ids[2], ids[4], ids[6])
    assert await trim_acknowledged(client, stream) == 0
    assert await entries(client, stream) == ids

    # Once ids[0] is acknowledged, exactly the acknowledged entries below the oldest pending
    # entry (ids[3]) go; every pending and every undelivered entry survives.
    await client.xack(stream, "g", ids[0])
    assert await pending(client, stream, "g") == {ids[3], ids[5], ids[7]}
    assert await trim_acknowledged(client, stream) == 3
    assert await entries(client, stream) == ids[3:]
    assert await pending(client, stream, "g") == {ids[3], ids[5], ids[7]}

    # Idempotent: a second trim removes nothing.
    assert await trim_acknowledged(client, stream) == 0
    assert await entries(client, stream) == ids[3:]

    # The pending entries are still deliverable to their consumers, the rest to new reads.
    history = await client.xreadgroup("g", "c1", {stream: "0"})
    assert [entry_id.decode() for entry_id, _ in history[0][1]] == [ids[3], ids[5]]
    assert await read(client, stream, "g", "c3", 10) == ids[8:]
    await client.delete(stream)


async def test_a_lagging_group_keeps_everything_it_still_needs(client: Redis) -> None:
    stream = new_stream()
    ids = await add(client, stream, 10)
    await client.xgroup_create(stream, "fast", id="0")
    await client.xgroup_create(stream, "slow", id="0")
    assert await read(client, stream, "fast", "f", 10) == ids
    await client.xack(stream, "fast", *ids)

    # "slow" has read nothing: every entry is still needed.
    assert await trim_acknowledged(client, stream) == 0
    assert await entries(client, stream) == ids

    # "slow" read four and acknowledged the first two: ids[2:] are still needed by it.
    assert await read(client, stream, "slow", "s", 4) == ids[:4]
    await client.xack(stream, "slow", ids[0], ids[1])
    assert await trim_acknowledged(client, stream) == 2
    assert await entries(client, stream) == ids[2:]

    # "slow" acknowledged all it read; it still needs ids[4:] (undelivered to it). Only the
    # entry at its last-delivered id may be kept below that.
    await client.xack(stream, "slow", ids[2], ids[3])
    removed = await trim_acknowledged(client, stream)
    remaining = await entries(client, stream)
    assert remaining[-6:] == ids[4:]
    assert remaining in (ids[3:], ids[4:])
    assert removed == 8 - len(remaining)

    # And the other way round: the fast group lags now.
    more = await add(client, stream, 3)
    assert await read(client, stream, "slow", "s", 20) == ids[4:] + more
    await client.xack(stream, "slow", *ids[4:], *more)
    await trim_acknowledged(client, stream)
    assert set(more) <= set(await entries(client, stream))
    assert await read(client, stream, "fast", "f", 20) == more
    await client.delete(stream)


async def test_a_stream_without_a_consumer_group_is_never_trimmed(client: Redis) -> None:
    stream = new_stream()
    assert await trim_acknowledged(client, stream) == -1  # no stream at all
    assert await client.exists(stream) == 0
    ids = await add(client, stream, 5)
    assert await trim_acknowledged(client, stream) == -1
    assert await entries(client, stream) == ids
    # A group that was created and destroyed leaves the stream untrimmed as well.
    await client.xgroup_create(stream, "g", id="$")
    await client.xgroup_destroy(stream, "g")
    assert await trim_acknowledged(client, stream) == -1
    assert await entries(client, stream) == ids
    await client.delete(stream)


async def test_pending_entries_with_large_sequence_numbers_are_not_trimmed(
    client: Redis,
) -> None:
    """Stream ids are two 64-bit integers; the floor comparison must not round them.

    Fails today: the script's ``older()`` compares ids through Lua numbers (doubles), so
    ``5-9007199254740992`` and ``5-9007199254740993`` compare equal, the floor becomes the
    group's last-delivered id, and ``XTRIM MINID`` removes the pending ``first``. The gateway
    itself only writes ``XADD *`` ids, whose sequence numbers stay small; explicit ids (a
    migration, a replay tool, another producer on the stream) can reach this.
    """
    stream = new_stream()
    first = (await client.xadd(stream, {"data": b"a"}, id="5-9007199254740992")).decode()
    second = (await client.xadd(stream, {"data": b"b"}, id="5-9007199254740993")).decode()
    await client.xgroup_create(stream, "g", id="0")
    assert await read(client, stream, "g", "c", 10) == [first, second]
    await client.xack(stream, "g", second)  # ``first`` stays pending
    await trim_acknowledged(client, stream)
    assert await entries(client, stream) == [first, second]
    assert await pending(client, stream, "g") == {first}
    await client.delete(stream)


# --- trim_acknowledged: random operation sequences -----------------------------------------


@dataclass
class GroupModel:
    """What one group has been delivered (a prefix of the stream) and still holds pending."""

    delivered: int  # entries[:delivered] have been delivered to this group (or predate it)
    pending: set[str] = field(default_factory=set)


# One round: add some entries; then each group reads some into one of two consumers and
# acknowledges the entries it holds pending where the mask says so (in id order, the rest stay
# pending); then maybe trim and check. Rounds of this shape reach every interesting state:
# pending entries between acknowledged ones, a group that lags, a group that read nothing.
GroupStep = tuple[int, int, list[bool]]  # (read count, consumer, acknowledgement mask)
Round = tuple[int, list[GroupStep], bool]  # (entries added, one step per group, trim after)

group_step = st.tuples(st.integers(0, 5), st.integers(0, 1), st.lists(st.booleans(), max_size=8))
rounds = st.lists(
    st.tuples(st.integers(0, 4), st.lists(group_step, min_size=2, max_size=2), st.booleans()),
    min_size=1,
    max_size=5,
)


async def check_trim(redis: Redis, stream: str, added: list[str], groups: list[GroupModel]) -> None:
    """Trim, then check safety, progress and idempotence against the model."""
    for number, model in enumerate(groups):
        assert await pending(redis, stream, f"g{number}") == model.pending
    before = await entries(redis, stream)
    removed = await trim_acknowledged(redis, stream)
    after = await entries(redis, stream)
    assert removed == len(before) - len(after)
    assert after == before[removed:]  # only a prefix is ever removed
    needed = set().union(*(m.pending | set(added[m.delivered :]) for m in groups))
    assert needed <= set(after), f"trimmed entries still needed: {sorted(needed - set(after))}"
    oldest_needed = min(map(order, needed), default=None)
    below = [e for e in after if oldest_needed is None or order(e) < oldest_needed]
    assert len(below) <= 1, f"acknowledged entries left untrimmed: {below}"
    assert await trim_acknowledged(redis, stream) == 0
    assert await entries(redis, stream) == after


@PROPERTY
@given(second_group=st.sampled_from(["none", "from-start", "late"]), plan=rounds)
async def test_trimming_never_removes_what_a_group_still_needs(
    client: Redis, second_group: str, plan: list[Round]
) -> None:
    stream = new_stream()
    added: list[str] = []
    await client.xgroup_create(stream, "g0", id="0", mkstream=True)
    groups = [GroupModel(0)]
    if second_group == "from-start":
        await client.xgroup_create(stream, "g1", id="0")
        groups.append(GroupModel(0))
    try:
        for number, (count, steps, trim) in enumerate(plan):
            added += await add(client, stream, count)
            if second_group == "late" and number == 1:
                await client.xgroup_create(stream, "g1", id="$")  # sees only later entries
                groups.append(GroupModel(len(added)))
            for group, (model, (reads, consumer, mask)) in enumerate(
                zip(groups, steps, strict=False)
            ):
                got: list[str] = []
                if reads:  # COUNT 0 would mean "no limit": a zero read is no read at all
                    got = await read(client, stream, f"g{group}", f"c{consumer}", reads)
                assert got == added[model.delivered : model.delivered + reads]
                model.delivered += len(got)
                model.pending |= set(got)
                held = sorted(model.pending, key=order)
                acked = [entry for entry, ack in zip(held, mask, strict=False) if ack]
                if acked:
                    assert await client.xack(stream, f"g{group}", *acked) == len(acked)
                    model.pending -= set(acked)
            if trim:
                await check_trim(client, stream, added, groups)
        await check_trim(client, stream, added, groups)
    finally:
        await client.delete(stream)


# --- remove_gone_consumers -------------------------------------------------------------


async def test_only_idle_consumers_holding_nothing_are_removed(client: Redis) -> None:
    stream = new_stream()
    ids = await add(client, stream, 3)
    await client.xgroup_create(stream, "g", id="0")
    assert await read(client, stream, "g", "holder", 1) == ids[:1]  # keeps ids[0] pending
    assert await read(client, stream, "g", "drained", 1) == ids[1:2]
    await client.xack(stream, "g", ids[1])
    await client.xgroup_createconsumer(stream, "g", "never-read")
    await asyncio.sleep(0.5)
    await client.xgroup_createconsumer(stream, "g", "fresh")  # idle ~0 ms
    assert await read(client, stream, "g", "recent", 1) == ids[2:]
    await client.xack(stream, "g", ids[2])

    removed = await remove_gone_consumers(client, stream, "g", idle_ms=300)
    assert sorted(removed) == ["drained", "never-read"]
    consumers = {c["name"].decode(): c for c in await client.xinfo_consumers(stream, "g")}
    assert set(consumers) == {"holder", "fresh", "recent"}
    assert consumers["holder"]["pending"] == 1
    assert await pending(client, stream, "g") == {ids[0]}

    # Nothing idle enough: nothing removed, even the idle holder of a pending entry.
    assert await remove_gone_consumers(client, stream, "g", idle_ms=60_000) == []
    await asyncio.sleep(0.5)
    assert sorted(await remove_gone_consumers(client, stream, "g", idle_ms=300)) == [
        "fresh",
        "recent",
    ]
    [holder] = await client.xinfo_consumers(stream, "g")
    assert holder["name"] == b"holder" and holder["pending"] == 1
    await client.delete(stream)


# --- real processes --------------------------------------------------------------------------

BOUND = 20  # stream length after a wave is processed
MARGIN = 8.0  # worker start-up, reclaim polling and processing, generously


def test_a_running_worker_keeps_the_stream_bounded(
    start: StartGateway, redis_server: RedisServer, store_server: StoreServer
) -> None:
    stack = StackEnv.create(
        redis_server, store_server, STREAM_TRIM_INTERVAL_SECONDS="0.5", WORKER_CONCURRENCY="20"
    )
    start("ingress", stack.env)
    start("worker", stack.env, wait_ready=False)
    redis = stack.queue_client()
    streams = stack.layout.streams
    try:
        total = 0
        for _ in range(3):
            responses = post_events(stack.url, [event() for _ in range(100)])
            assert [r.status_code for r in responses] == [202] * 100
            total += 100
            assert stack.wait_terminal(total, timeout=30)
            assert wait_for(lambda: stack.stream_length() <= BOUND, timeout=5), (
                stack.stream_length()
            )
            added = sum(int(redis.xinfo_stream(s)["entries-added"]) for s in streams)
            assert added >= total
        assert stack.count("processed_events", {"status": "processed"}) == total
        assert stack.count("active_shipments") == total
        assert stack.pending() == 0
    finally:
        redis.close()


def test_a_dead_consumers_messages_are_reclaimed_without_new_traffic(
    start: StartGateway, redis_server: RedisServer, store_server: StoreServer
) -> None:
    idle_timeout = 2.0
    stack = StackEnv.create(
        redis_server, store_server, WORKER_IDLE_TIMEOUT_MS=str(int(idle_timeout * 1000))
    )
    start("ingress", stack.env)  # creates the group "courier-workers" at id 0
    responses = post_events(stack.url, [event() for _ in range(5)])
    assert [r.status_code for r in responses] == [202] * 5
    redis = stack.queue_client()
    streams = stack.layout.streams
    try:
        # A consumer takes every message and dies: it never acknowledges any of them.
        fetched = [
            entry
            for stream in streams
            for _, entries in redis.xreadgroup(
                CONSUMER_GROUP, "dead-consumer", {stream: ">"}, count=100
            )
            for entry in entries
        ]
        taken_at = time.monotonic()
        assert len(fetched) == 5
        assert stack.pending() == 5

        worker = start("worker", stack.env, wait_ready=False)
        assert stack.wait_terminal(5, timeout=idle_timeout + MARGIN), worker.logs()[-3000:]
        elapsed = time.monotonic() - taken_at
        # Not before the idle timeout (only a reclaim can reach them), and soon after it.
        assert idle_timeout <= elapsed <= idle_timeout + MARGIN
        assert stack.count("processed_events", {"status": "processed"}) == 5
        assert wait_for(lambda: stack.pending() == 0, 5)
        # No new message ever arrived: the worker got them only by reclaiming.
        assert sum(int(redis.xinfo_stream(s)["entries-added"]) for s in streams) == 5
        assert "reclaimed unacknowledged messages" in worker.logs()
        for stream in streams:
            dead = [
                c
                for c in redis.xinfo_consumers(stream, CONSUMER_GROUP)
                if c["name"] in (b"dead-consumer", "dead-consumer")
            ]
            assert all(consumer["pending"] == 0 for consumer in dead)
    finally:
        redis.close()
