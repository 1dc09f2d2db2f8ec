"""The leases this worker's running jobs hold: renewed while they work, checked before effects.

A ledger claim gives a job its event's key for one lease (``WORKER_IDLE_TIMEOUT_MS``).

- **Renewal.** A job that runs longer (a slow downstream, a store that answers slowly) keeps its
  key: every third of a lease one bulk write extends the leases of every job of this worker that
  has held its key that long. Most jobs finish long before and cost nothing.
- **Fencing.** Immediately before the downstream call a job *fences*: one conditional update that
  extends its lease only if it still holds the key, so the check and the renewal are one round
  trip (on the first attempt it also records that the store step ran, which a retry then skips).
  A job whose key was taken over meanwhile (it was paused or cut off past its lease and another
  worker reclaimed the event) gets :class:`LeaseLostError` and stops: no downstream call, no mark.
  The terminal mark is fenced the same way (it matches only while the job holds the key).
- **A pause after the fence.** The lease end is wall-clock time. A process stopped after the store
  answered, long enough for most of the new lease to pass, fences again instead of calling; one
  stopped later, before its request is on the wire, finds the send deadline passed and does not
  send at all (:mod:`~courier_gateway.worker.send_window`).

Nothing can take back a request already written when the process is paused; it carries the
``Idempotency-Key``, so a downstream that honours it applies it once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection

from courier_gateway.worker.ledger import now

__all__ = ["LeaseLostError", "Leases"]

log = logging.getLogger("courier_gateway.worker")

_FENCE_TRIES = 3


class LeaseLostError(Exception):
    """The job no longer holds its event's key: another worker took it over, or finished it."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the lease on {key!r} was taken over")
        self.key = key


@dataclass(slots=True)
class _Holding:
    key: str
    token: str
    renewed: float  # time.monotonic() of the claim or the last renewal


class Leases:
    """Renews the leases of running jobs and fences their side effects."""

    def __init__(
        self, collection: Callable[[], AsyncCollection[dict[str, Any]]], *, lease_seconds: float
    ) -> None:
        self._collection = collection
        self.lease_ms = int(lease_seconds * 1000)
        self.renew_every = max(lease_seconds / 3, 0.05)
        # A fence that leaves less than this much lease to start the call is repeated.
        self._margin_ms = self.lease_ms // 4
        self._held: dict[tuple[str, str], _Holding] = {}

    def hold(self, key: str, token: str) -> None:
        """A job claimed ``key`` under ``token``: keep its lease alive while it runs."""
        self._held[(key, token)] = _Holding(key, token, time.monotonic())

    def drop(self, key: str, token: str) -> None:
        """The job is done with ``key`` (finished, failed or lost it)."""
        self._held.pop((key, token), None)

    @property
    def held(self) -> int:
        """How many keys this worker's jobs hold now."""
        return len(self._held)

    def due(self) -> bool:
        """Whether some lease has been held for a third of a lease since its last renewal."""
        moment = time.monotonic()
        return any(moment - h.renewed >= self.renew_every for h in self._held.values())

    async def renew(self) -> int:
        """Extend the leases held for a third of a lease or more; return how many were kept.

        A lease that was taken over is not extended (the update matches only its holder); that
        job learns it at its next fence or at its terminal mark.
        """
        moment = time.monotonic()
        due = [h for h in self._held.values() if moment - h.renewed >= self.renew_every]
        if not due:
            return 0
        until = int(time.time() * 1000) + self.lease_ms
        result = await self._collection().bulk_write(
            [
                UpdateOne({"_id": h.key, "leaseOwner": h.token}, {"$set": {"leaseUntilMs": until}})
                for h in due
            ],
            ordered=False,
        )
        for holding in due:
            holding.renewed = moment
        if result.matched_count < len(due):
            log.info(
                "some leases were taken over while their jobs ran",
                extra={"renewed": result.matched_count, "due": len(due)},
            )
        return int(result.matched_count)

    async def fence(self, key: str, token: str, *, applied: bool = False) -> float:
        """Check and extend the job's lease in one round trip; raise if it was taken over.

        ``applied``: also record that the store step ran (``appliedAt``), in the same write.
        Returns the send deadline (epoch seconds): the new lease's end, less a margin for
        clock skew between workers; a request not written by then must not be sent.
        """
        for _ in range(_FENCE_TRIES):
            until = int(time.time() * 1000) + self.lease_ms
            fields: dict[str, Any] = {"leaseUntilMs": until}
            if applied:
                fields["appliedAt"] = now()
            result = await self._collection().update_one(
                # leaseOwner is set only while the key is processing: no status condition needed.
                {"_id": key, "leaseOwner": token},
                {"$set": fields},
            )
            if result.matched_count == 0:
                raise LeaseLostError(key)
            holding = self._held.get((key, token))
            if holding is not None:
                holding.renewed = time.monotonic()
            deadline = (until - self._margin_ms) / 1000
            if time.time() < deadline:
                return deadline
            # This process was paused after the store answered: the lease may be running out.
            log.info("lease nearly expired after the fence; fencing again", extra={"key": key})
        raise LeaseLostError(key)
