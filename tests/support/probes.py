"""Watching real processes from the outside: an endpoint polled over time, paced signed load.

Both run in a background thread and are stopped by the test (``stop()``), which then reads what
they saw: every status answered with its time, every accepted idempotency key.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.support.signing import event, signed
from tests.support.stack import SECRET

__all__ = ["PacedSender", "StatusPoller"]


@dataclass
class StatusPoller:
    """GETs ``url`` every ``interval`` s; records ``(time.monotonic(), status or 0)``."""

    url: str
    interval: float = 0.1
    seen: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> StatusPoller:
        def poll() -> None:
            with httpx.Client(timeout=1) as client:
                while not self._stop.is_set():
                    try:
                        status = client.get(self.url).status_code
                    except httpx.HTTPError:
                        status = 0
                    self.seen.append((time.monotonic(), status))
                    self._stop.wait(self.interval)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def statuses(self, since: float = 0.0, until: float = float("inf")) -> list[int]:
        """The statuses answered between two ``time.monotonic()`` instants."""
        return [status for at, status in list(self.seen) if since <= at <= until]

    def first(self, status: int, since: float = 0.0) -> float | None:
        """When ``status`` was first answered after ``since`` (None: never)."""
        return next((at for at, seen in list(self.seen) if at >= since and seen == status), None)


@dataclass
class PacedSender:
    """Posts fresh signed events to ``url`` at about ``rate`` per second until stopped.

    Each request uses a pooled connection; ``accepted`` holds the idempotency key of every 202,
    ``statuses`` counts every answer (0: no answer).
    """

    url: str
    rate: float
    accepted: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, senders: int = 2) -> PacedSender:
        for _ in range(senders):
            thread = threading.Thread(target=self._send, args=(self.rate / senders,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _send(self, rate: float) -> None:
        gap = 1 / rate
        with httpx.Client(timeout=5) as client:
            due = time.monotonic()
            while not self._stop.is_set():
                body, headers = signed(event(), SECRET)
                try:
                    response = client.post(
                        f"{self.url}/v1/events/courier", content=body, headers=headers
                    )
                except httpx.HTTPError:
                    self.statuses[0] += 1
                else:
                    self.statuses[response.status_code] += 1
                    if response.status_code == 202:
                        document: dict[str, Any] = response.json()
                        self.accepted.append(document["idempotencyKey"])
                due += gap
                self._stop.wait(max(0.0, due - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
