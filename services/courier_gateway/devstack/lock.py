"""One stack per data directory: an exclusive ``flock`` on ``.data/lock``.

Two stacks on one directory would run two Redis servers on the same append-only files. The
lock is taken before anything is imported or started, so a second ``make dev`` is refused in a
fraction of a second with one line, and the first stack never notices.

The kernel releases the lock when the last process holding it exits, whatever the way it
exits: no stale lock survives a crash. The Redis and store children inherit it, so a new stack
cannot start while the old one's servers are still writing their files.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

__all__ = ["DataDirLock", "DataDirLockedError"]

LOCK_FILE = "lock"


class DataDirLockedError(Exception):
    """Another stack holds the data directory; the message says which and what to do."""


class DataDirLock:
    """The held lock of one data directory (see :func:`DataDirLock.acquire`)."""

    def __init__(self, directory: Path, descriptor: int) -> None:
        self.directory = directory
        self.descriptor = descriptor

    @classmethod
    def acquire(cls, directory: Path) -> DataDirLock:
        """Take the lock or raise :class:`DataDirLockedError` at once (never waits)."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / LOCK_FILE
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(descriptor)
            os.close(descriptor)
            raise DataDirLockedError(_refusal(directory, holder)) from None
        lock = cls(directory, descriptor)
        lock.describe(f"pid {os.getpid()}, starting")
        return lock

    def describe(self, holder: str) -> None:
        """Record who holds the lock, for the refusal message of a second stack."""
        os.ftruncate(self.descriptor, 0)
        os.pwrite(self.descriptor, holder.encode() + b"\n", 0)

    def release(self) -> None:
        """Drop the lock (children that inherited it keep it until they exit)."""
        if self.descriptor >= 0:
            os.close(self.descriptor)
            self.descriptor = -1


def _read_holder(descriptor: int) -> str:
    try:
        return os.pread(descriptor, 512, 0).decode(errors="replace").strip()
    except OSError:
        return ""


def _refusal(directory: Path, holder: str) -> str:
    where = f" ({holder})" if holder else ""
    return (
        f"another courier-gateway dev is already running on {directory}{where}; stop it"
        " (Ctrl-C in its terminal) or start this one with --data-dir elsewhere"
    )
