"""Group commit: concurrent callers' small writes go out together, each caller gets its outcome.

Calls that arrive while a batch is being written (or within one turn of the event loop) form the
next batch. Every caller still waits for its own write to finish, so nothing is assumed done
before the server has it. Used for the worker's ledger claims and its stream acknowledgements;
the intake's enqueue does the same inside one Redis script (``queue/intake_writer.py``).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Generic, TypeVar

__all__ = ["GroupCommit"]

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(ABC, Generic[T, R]):
    """Collects items; :meth:`write` sends a batch and settles each item's future with an ``R``."""

    def __init__(self, *, max_batch: int = 100) -> None:
        self._max_batch = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._running: asyncio.Task[None] | None = None
        self._scheduled = False

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait until its batch is written; its result, or its own error."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._kick()
        return await future

    @abstractmethod
    async def write(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        """Write the items and resolve every future that is not done yet."""

    def batch_key(self, item: T) -> object | None:
        """What must be unique within one batch (None: nothing). A second item with the key
        of an earlier one waits for the next batch, so it sees the first one's write."""
        return None

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        later: list[tuple[T, asyncio.Future[R]]] = []
        keys: set[object] = set()
        for entry in self._pending:
            key = self.batch_key(entry[0])
            if len(batch) >= self._max_batch or (key is not None and key in keys):
                later.append(entry)
            else:
                batch.append(entry)
                keys.add(key)
        self._pending = later
        return batch

    def _kick(self) -> None:
        if self._scheduled or self._running is not None:
            return  # the running flush takes what queued meanwhile
        self._scheduled = True
        # One turn of the loop lets every task woken by the same event join the batch.
        asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        self._running = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = [(item, f) for item, f in self._take() if not f.done()]
                if not batch:
                    continue
                try:
                    await self.write(batch)
                except Exception as error:  # every caller of the batch gets the failure
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
        finally:
            self._running = None
            if self._pending:
                self._kick()
