"""Group commit for the ledger's claims: concurrent inserts share one round trip.

A worker runs ``WORKER_CONCURRENCY`` jobs, and a read from the stream hands it several messages
at once, so their claims (one insert each) arrive together. :class:`InsertBatcher` sends the
inserts that queue up while the previous batch is in flight (or within one turn of the event
loop) as one unordered ``insert_many``, and gives each caller its own outcome: nothing, or the
``DuplicateKeyError`` of its document. Each caller still waits for its own write, so a claim is
never assumed before the store has it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

__all__ = ["InsertBatcher"]

_DUPLICATE_KEY = 11000


class InsertBatcher:
    """Concurrent ``insert(document)`` calls, written in batches of at most ``max_batch``."""

    def __init__(
        self, collection: Callable[[], AsyncCollection[dict[str, Any]]], *, max_batch: int = 100
    ) -> None:
        self._collection = collection
        self._max_batch = max_batch
        self._pending: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        self._running: asyncio.Task[None] | None = None
        self._scheduled = False

    async def insert(self, document: dict[str, Any]) -> None:
        """Insert ``document``; raise ``DuplicateKeyError`` if its ``_id`` exists."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((document, future))
        self._kick()
        await future

    def _kick(self) -> None:
        if self._scheduled or self._running is not None:
            return  # the running flush takes what queued meanwhile
        self._scheduled = True
        # One turn of the loop lets every job woken by the same stream read join the batch.
        asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        self._scheduled = False
        self._running = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        try:
            while self._pending:
                await self._write(self._take())
        finally:
            self._running = None
            if self._pending:
                self._kick()

    def _take(self) -> list[tuple[dict[str, Any], asyncio.Future[None]]]:
        """The next batch: a second copy of one ``_id`` waits for the next batch, so it gets a
        plain duplicate-key answer after the first is written."""
        batch: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        later: list[tuple[dict[str, Any], asyncio.Future[None]]] = []
        ids: set[Any] = set()
        for item in self._pending:
            key = item[0].get("_id")
            if len(batch) < self._max_batch and key not in ids:
                batch.append(item)
                ids.add(key)
            else:
                later.append(item)
        self._pending = later
        return batch

    async def _write(self, batch: list[tuple[dict[str, Any], asyncio.Future[None]]]) -> None:
        live = [(document, future) for document, future in batch if not future.done()]
        if not live:
            return
        failures: dict[int, BaseException] = {}
        try:
            await self._collection().insert_many([document for document, _ in live], ordered=False)
        except BulkWriteError as error:
            for item in error.details.get("writeErrors", []):
                code = item.get("code")
                kind = DuplicateKeyError if code == _DUPLICATE_KEY else OperationFailure
                failures[item["index"]] = kind(item.get("errmsg", "write error"), code, item)
        except Exception as error:  # every caller gets the store's failure
            for _, future in live:
                if not future.done():
                    future.set_exception(error)
            return
        for index, (_, future) in enumerate(live):
            if future.done():
                continue
            if index in failures:
                future.set_exception(failures[index])
            else:
                future.set_result(None)
