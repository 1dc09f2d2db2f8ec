"""Group commit for the ledger: concurrent claims and terminal marks share round trips.

A worker runs ``WORKER_CONCURRENCY`` jobs, and a read from the stream hands it several messages
at once, so their claims (one insert each) and later their terminal marks (one update each)
arrive together. :class:`InsertBatcher` sends claims as one unordered ``insert_many`` and gives
each caller its own outcome (nothing, or the ``DuplicateKeyError`` of its document);
:class:`FinishBatcher` sends marks as one unordered ``bulk_write`` and tells each caller whether
its lease still held.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymongo import UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from courier_gateway.group_commit import GroupCommit

__all__ = ["Finish", "FinishBatcher", "InsertBatcher"]

_DUPLICATE_KEY = 11000

Item = tuple[dict[str, Any], asyncio.Future[None]]


class InsertBatcher(GroupCommit[dict[str, Any], None]):
    """Concurrent ``insert(document)`` calls, written in batches."""

    def __init__(
        self, collection: Callable[[], AsyncCollection[dict[str, Any]]], *, max_batch: int = 100
    ) -> None:
        super().__init__(max_batch=max_batch)
        self._collection = collection

    async def insert(self, document: dict[str, Any]) -> None:
        """Insert ``document``; raise ``DuplicateKeyError`` if its ``_id`` exists."""
        await self.submit(document)

    def batch_key(self, item: dict[str, Any]) -> object | None:
        """A second copy of one ``_id`` gets a plain duplicate-key answer in the next batch."""
        return item.get("_id")

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


@dataclass(frozen=True, slots=True)
class Finish:
    """A terminal mark: the ``$set`` for the record ``key``, if ``token`` still holds it."""

    key: str
    token: str | None
    fields: dict[str, Any]

    def query(self) -> dict[str, Any]:
        """The record, held by this token (any holder when the token is None)."""
        if self.token is None:
            return {"_id": self.key}
        return {"_id": self.key, "leaseOwner": self.token}


class FinishBatcher(GroupCommit[Finish, bool]):
    """Terminal marks of concurrent jobs in one unordered ``bulk_write``.

    Each caller learns whether its lease still held. ``bulk_write`` reports only a total; when
    it falls short, the records are read back once: a mark that was applied carries its token in
    ``finishedBy`` (another worker's mark carries that worker's).
    """

    def __init__(
        self, collection: Callable[[], AsyncCollection[dict[str, Any]]], *, max_batch: int = 100
    ) -> None:
        super().__init__(max_batch=max_batch)
        self._collection = collection

    def batch_key(self, item: Finish) -> object | None:
        """One mark per record and batch."""
        return item.key

    async def write(self, batch: list[tuple[Finish, asyncio.Future[bool]]]) -> None:
        """Apply every mark; resolve each with whether it matched."""
        collection = self._collection()
        result = await collection.bulk_write(
            [UpdateOne(mark.query(), {"$set": mark.fields}) for mark, _ in batch], ordered=False
        )
        if result.matched_count == len(batch):
            held = dict.fromkeys((mark.key for mark, _ in batch), True)
        else:
            keys = [mark.key for mark, _ in batch]
            found = {
                document["_id"]: document
                async for document in collection.find(
                    {"_id": {"$in": keys}}, projection={"finishedBy": 1, "status": 1}
                )
            }
            held = {mark.key: _applied(mark, found.get(mark.key)) for mark, _ in batch}
        for mark, future in batch:
            if not future.done():
                future.set_result(held[mark.key])


def _applied(mark: Finish, document: dict[str, Any] | None) -> bool:
    if document is None:
        return False
    if mark.token is None:
        return bool(document.get("status") == mark.fields["status"])
    return bool(document.get("finishedBy") == mark.token)
