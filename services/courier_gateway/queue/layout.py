"""Where each event goes: the queue's partitions and the Redis keys of each.

With ``QUEUE_PARTITIONS=1`` on one Redis (or Sentinel) the layout is the one every earlier
version used: the stream ``QUEUE_STREAM``, its ``:retries`` and ``:deferrals`` schedules and the
duplicate hints ``cg:seen:<tenant>:<key>``, so existing data keeps working.

Otherwise (several partitions, or any Redis Cluster) each partition's keys share one hash tag:
the stream ``{courier-events:3}``, ``{courier-events:3}:retries``, ``…:deferrals`` and the hints
``cg:seen:{courier-events:3}:<tenant>:<key>``. The intake's script then touches one slot per
call, as a cluster demands. The partition of an event is a stable hash of (authenticated
source, idempotency key), so a key's hint and its stream entry always meet. Each tag is chosen
so the partitions' slots are spread evenly over the 16,384 slots, and with them over the
primaries of a cluster created with equal slot ranges (``redis-cli --cluster create``): evenly
when the partition count is a multiple of the number of primaries (six on three, twelve on
three or four).

Rate-limit buckets of every source share one tag of their own, so one script call decides the
limits of a whole batch of requests, whichever partitions their events then go to.

Every stream ever written is recorded in a registry set, so workers also drain partitions a
previous partition count created (README, "Redis topologies and partitions").
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cached_property

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from courier_gateway.config import Settings

__all__ = ["Partition", "QueueLayout", "registry_key"]


def registry_key(stream: str) -> str:
    """The set of every stream (partition) the ingress has written for ``stream``."""
    return f"{stream}:partitions"


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition: its stream, and the prefix of the duplicate hints stored with it."""

    index: int
    stream: str
    hint_prefix: str

    def hint_key(self, tenant: str, idempotency_key: str) -> str:
        """The duplicate hint of ``idempotency_key`` sent by ``tenant`` (scoped by tenant)."""
        return f"{self.hint_prefix}{tenant}:{idempotency_key}"


def _spread_tag(stream: str, index: int, count: int) -> str:
    """A hash tag for partition ``index`` whose slot is in the index-th of ``count`` ranges."""
    low = index * REDIS_CLUSTER_HASH_SLOTS // count
    high = (index + 1) * REDIS_CLUSTER_HASH_SLOTS // count
    base = f"{stream}:{index}"
    for attempt in range(100_000):
        tag = base if attempt == 0 else f"{base}~{attempt}"
        if low <= key_slot(tag.encode()) < high:
            return tag
    return base  # unreachable in practice: a range holds at least 64 slots


class QueueLayout:
    """The partitions of ``stream`` and the keys the intake and the worker use for them."""

    def __init__(self, stream: str, count: int = 1, *, tagged: bool = False) -> None:
        self.stream = stream
        self.count = count
        #: False only for the historical one-partition layout (no hash tags anywhere).
        self.tagged = tagged or count > 1

    @classmethod
    def from_settings(cls, settings: Settings) -> QueueLayout:
        """The layout the settings describe (tagged on a cluster, whatever the count)."""
        return cls(
            settings.queue_stream,
            settings.queue_partitions,
            tagged=settings.redis_mode == "cluster",
        )

    @cached_property
    def partitions(self) -> tuple[Partition, ...]:
        """Every partition, in index order."""
        if not self.tagged:
            return (Partition(0, self.stream, "cg:seen:"),)
        tags = [_spread_tag(self.stream, i, self.count) for i in range(self.count)]
        return tuple(
            Partition(i, f"{{{tag}}}", f"cg:seen:{{{tag}}}:") for i, tag in enumerate(tags)
        )

    @property
    def streams(self) -> list[str]:
        """The partitions' stream names."""
        return [partition.stream for partition in self.partitions]

    @property
    def registry(self) -> str:
        """The key of the registry of every partition stream written for this queue."""
        return registry_key(self.stream)

    def partition_for(self, tenant: str, idempotency_key: str) -> Partition:
        """The partition of an event: a stable hash of who sent it and its idempotency key."""
        if self.count == 1:
            return self.partitions[0]
        digest = zlib.crc32(f"{tenant}\0{idempotency_key}".encode())
        return self.partitions[digest % self.count]

    def rate_key(self, tenant: str) -> str:
        """The rate-limit bucket of ``tenant`` (all buckets share a slot when tagged)."""
        if not self.tagged:
            return f"cg:ratelimit:{tenant}"
        return f"cg:ratelimit:{{{self.stream}:rate}}:{tenant}"
