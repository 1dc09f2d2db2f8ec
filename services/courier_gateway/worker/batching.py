"""Group commit for the ledger's claims: concurrent inserts share one round trip.

A worker runs ``WORKER_CONCURRENCY`` jobs, and a read from the stream hands it several messages
at once, so their claims (one insert each) arrive together. :class:`InsertBatcher` sends them as
one unordered ``insert_many`` and gives each caller its own outcome: nothing, or the
``DuplicateKeyError`` of its document.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from courier_gateway.group_commit import GroupCommit

__all__ = ["InsertBatcher"]

_DUPLICATE_KEY = 11000

Item = tuple[dict[str, Any], asyncio.Future[None]]


class InsertBatcher(GroupCommit[dict[str, Any]]):
    """Concurrent ``insert(document)`` calls, written in batches."""

    def __init__(
        self, collection: Callable[[], AsyncCollection[dict[str, Any]]], *, max_batch: int = 100
    ) -> None:
        super().__init__(max_batch=max_batch)
        self._collection = collection

    async def insert(self, document: dict[str, Any]) -> None:
        """Insert ``document``; raise ``DuplicateKeyError`` if its ``_id`` exists."""
        await self.submit(document)

    def take(self) -> list[Item]:
        """A second copy of one ``_id`` waits for the next batch, so that it gets a plain
        duplicate-key answer once the first is written."""
        batch = super().take()
        first: list[Item] = []
        later: list[Item] = []
        ids: set[Any] = set()
        for item in batch:
            key = item[0].get("_id")
            (later if key in ids else first).append(item)
            ids.add(key)
        self.keep_for_later(later)
        return first

    async def write(self, batch: list[Item]) -> None:
        """One unordered ``insert_many``; per-document errors go to their callers."""
        failures: dict[int, BaseException] = {}
        try:
            await self._collection().insert_many([document for document, _ in batch], ordered=False)
        except BulkWriteError as error:
            for item in error.details.get("writeErrors", []):
                code = item.get("code")
                kind = DuplicateKeyError if code == _DUPLICATE_KEY else OperationFailure
                failures[item["index"]] = kind(item.get("errmsg", "write error"), code, item)
        for index, (_, future) in enumerate(batch):
            if future.done():
                continue
            if index in failures:
                future.set_exception(failures[index])
            else:
                future.set_result(None)
