"""Load against a stack while its Redis primary is killed, and what became of every 202.

Used by ``tests/topologies/test_failover.py`` (nothing acknowledged may be lost with
``ENQUEUE_MIN_REPLICAS=1``) and by ``python -m loadtest.failover`` (which also measures what is
lost without it, and how long intake answered 503).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from tests.support.signing import event, signed
from tests.support.stack import SECRET, StackEnv

__all__ = ["RATE", "FailoverOutcome", "Load", "failover_under_load"]

RATE = 200  # requests per second offered
THREADS = 8


class Load:
    """Posts fresh events at up to ``RATE``/s until stopped; remembers every answer."""

    def __init__(self, url: str, rate: float = RATE) -> None:
        self.url = url
        self.rate = rate
        self.accepted: list[str] = []
        self.statuses: Counter[int] = Counter()
        #: ``time.monotonic()`` of every answer that was not a 202.
        self.refused_at: list[float] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def _post(self, client: httpx.Client) -> None:
        document = event()
        body, headers = signed(document, SECRET)
        try:
            code = client.post(
                f"{self.url}/v1/events/courier", content=body, headers=headers
            ).status_code
        except httpx.HTTPError:
            code = 0
        with self.lock:
            self.statuses[code] += 1
            if code == 202:
                self.accepted.append(document["eventId"])
            else:
                self.refused_at.append(time.monotonic())

    def _run(self) -> None:
        interval = THREADS / self.rate
        with httpx.Client(timeout=10) as client:
            next_at = time.monotonic()
            while not self.stop.is_set():
                self._post(client)
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))

    def start(self) -> ThreadPoolExecutor:
        """Start the posting threads (stop them with ``stop.set()`` and the pool's shutdown)."""
        pool = ThreadPoolExecutor(THREADS)
        for _ in range(THREADS):
            pool.submit(self._run)
        return pool


@dataclass
class FailoverOutcome:
    """What the load got, and which acknowledged events never reached the ledger."""

    statuses: Counter[int]
    accepted: int
    lost: list[str] = field(default_factory=list)
    #: Seconds from the kill to the last refused request (0: none refused).
    unavailable_seconds: float = 0.0


def failover_under_load(
    stack: StackEnv,
    kill: Callable[[], object],
    *,
    before: float = 3.0,
    after: float = 8.0,
    settle: float = 120.0,
) -> FailoverOutcome:
    """Load for ``before`` s, ``kill()``, load ``after`` s more; wait for the accepted events
    to become terminal (up to ``settle`` s) and report those that never did."""
    load = Load(stack.url)
    pool = load.start()
    try:
        time.sleep(before)
        killed_at = time.monotonic()
        kill()
        time.sleep(after)
    finally:
        load.stop.set()
        pool.shutdown(wait=True)
    accepted = set(load.accepted)
    stack.wait_terminal(len(accepted), timeout=settle)
    seen = {r["eventId"] for r in stack.find("processed_events")}
    refused = [at for at in load.refused_at if at >= killed_at]
    return FailoverOutcome(
        statuses=load.statuses,
        accepted=len(accepted),
        lost=sorted(accepted - seen),
        unavailable_seconds=max(refused) - killed_at if refused else 0.0,
    )
