"""Keeping the stream bounded without losing anything: safe trimming and consumer clean-up.

Trimming uses ``XTRIM MINID`` with the smallest id any consumer group still needs: the oldest
pending (delivered, unacknowledged) entry, or the group's last-delivered id when nothing is
pending. Everything below that id has been delivered and acknowledged by every group. The
computation and the trim run in one script, so no delivery or acknowledgement can interleave.
A stream with no consumer group is never trimmed: nobody has read it yet.

Consumers that are gone (idle long past the reclaim timeout) are removed from the group only
when they hold no pending entries; their pending entries are first reclaimed by live workers.
"""

from __future__ import annotations

import logging

from redis.exceptions import ResponseError

from courier_gateway.observability.worker_metrics import QUEUE_LAG, RETRIES_PENDING
from courier_gateway.queue.registry import is_missing_group
from courier_gateway.queue.state import read_queue_state
from courier_gateway.queue.topology import AsyncRedis

__all__ = ["publish_queue_state", "remove_gone_consumers", "trim_acknowledged"]

log = logging.getLogger(__name__)

_TRIM = """
-- Ids are compared as digit strings: Lua numbers lose precision above 2^53.
local function less(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function older(a, b)
  local ams, aseq = string.match(a, '(%d+)-(%d+)')
  local bms, bseq = string.match(b, '(%d+)-(%d+)')
  if ams ~= bms then return less(ams, bms) end
  return less(aseq, bseq)
end
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local groups = redis.call('XINFO', 'GROUPS', KEYS[1])
if #groups == 0 then return -1 end
local floor = nil
for _, group in ipairs(groups) do
  local info = {}
  for i = 1, #group, 2 do info[group[i]] = group[i + 1] end
  local needed = info['last-delivered-id']
  local pending = redis.call('XPENDING', KEYS[1], info['name'])
  if tonumber(pending[1]) > 0 and older(pending[2], needed) then needed = pending[2] end
  if floor == nil or older(needed, floor) then floor = needed end
end
return redis.call('XTRIM', KEYS[1], 'MINID', floor)
"""


async def trim_acknowledged(redis: AsyncRedis, stream: str) -> int:
    """Trim entries every group has acknowledged; return how many were removed (-1: no group)."""
    removed = int(await redis.eval(_TRIM, 1, stream))
    if removed > 0:
        log.debug("stream trimmed", extra={"removed": removed})
    return removed


async def remove_gone_consumers(
    redis: AsyncRedis, stream: str, group: str, *, idle_ms: int
) -> list[str]:
    """Delete consumers idle longer than ``idle_ms`` that hold nothing pending."""
    removed: list[str] = []
    try:
        consumers = await redis.xinfo_consumers(stream, group)
    except ResponseError as error:
        if not is_missing_group(error):
            raise
        return removed  # Redis restarted empty: the worker's read loop recreates the group
    for consumer in consumers:
        name = (
            consumer["name"].decode() if isinstance(consumer["name"], bytes) else consumer["name"]
        )
        if int(consumer["pending"]) == 0 and int(consumer["idle"]) > idle_ms:
            await redis.xgroup_delconsumer(stream, group, name)
            removed.append(name)
    if removed:
        log.info("removed consumers that are gone", extra={"consumers": removed})
    return removed


async def publish_queue_state(redis: AsyncRedis, stream: str) -> None:
    """Export the queue lag (undelivered and pending entries) and the retries waiting."""
    state = await read_queue_state(redis, stream)
    QUEUE_LAG.labels("undelivered").set(state.undelivered)
    QUEUE_LAG.labels("pending").set(state.pending)
    RETRIES_PENDING.set(state.retries_scheduled)
