"""taskiq's receiver with the worker's job bookkeeping: drain, leave unacknowledged, liveness.

- **Running jobs are known.** On SIGTERM taskiq waits ``WORKER_DRAIN_TIMEOUT_MS`` for them and
  then simply returns, leaving them running while the process closes its connections. Here the
  jobs still running then are cancelled and awaited *before* anything is closed: each gives its
  lease back and leaves its message unacknowledged (redelivered to another worker), instead of
  failing half-way against a closed store.
- **Leaving a message unacknowledged is an outcome**, not a crash: a job whose key was taken
  over, or whose next step could not be stored (Redis or the store unreachable past patience),
  raises :class:`LeaveUnacknowledgedError` after logging its one line; the message is then
  redelivered after the idle timeout. taskiq would otherwise leave that exception in a task
  nobody awaits, which asyncio reports later as an error with a traceback.
- **Progress is recorded** (``heartbeat``): every finished job, like every stream read, tells the
  liveness check that the worker is not stuck.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from taskiq import AckableMessage
from taskiq.receiver import Receiver

__all__ = ["CourierReceiver", "LeaveUnacknowledgedError", "quiet_library_logs"]

log = logging.getLogger("courier_gateway.worker")

_TASKIQ_RECEIVER = "taskiq.receiver.receiver"


class LeaveUnacknowledgedError(Exception):
    """End the job without acknowledging its message (already logged by whoever raised it)."""


class CourierReceiver(Receiver):
    """A :class:`taskiq.receiver.Receiver` that tracks its running jobs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.running: set[asyncio.Task[Any]] = set()
        #: ``time.monotonic()`` of the last finished job.
        self.heartbeat = time.monotonic()

    async def callback(self, message: bytes | AckableMessage, raise_err: bool = False) -> None:
        """Run one message (taskiq's callback), tracked, and never leave an error unretrieved."""
        task = asyncio.current_task()
        if task is not None:
            self.running.add(task)
        try:
            await super().callback(message, raise_err)
        except LeaveUnacknowledgedError:
            pass
        except Exception:
            log.exception("unexpected error around a job; its message stays unacknowledged")
        finally:
            if task is not None:
                self.running.discard(task)
            self.heartbeat = time.monotonic()

    async def release_running(self, seconds: float) -> int:
        """Cancel the jobs still running (past the drain timeout) and wait for them to let go.

        Each cancelled job releases its lease and leaves its message unacknowledged; returns
        how many there were.
        """
        jobs = list(self.running)
        if not jobs:
            return 0
        log.warning(
            "drain timeout reached; releasing the jobs still running", extra={"jobs": len(jobs)}
        )
        for job in jobs:
            job.cancel()
        await asyncio.wait(jobs, timeout=seconds)
        return len(jobs)


class _DuplicateJobLines(logging.Filter):
    """Drops taskiq's own per-job error line for failures our pipeline already logged."""

    def __init__(self, handled: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self._handled = handled

    def filter(self, record: logging.LogRecord) -> bool:
        # A failure our pipeline already logged (its one line, and a traceback if unexpected).
        exc_info = record.exc_info
        return not (exc_info and isinstance(exc_info[1], self._handled))


def quiet_library_logs(handled: tuple[type[BaseException], ...]) -> None:
    """Keep taskiq's receiver and httpx to warnings, minus taskiq's duplicate failure lines.

    taskiq logs every job at INFO ("Executing task …") and every failure at ERROR with a
    traceback ("Exception found while executing function."): one more line per job and a
    traceback per expected outcome (a retry, a deferral, a dead letter); httpx logs every
    downstream request at INFO. The worker writes one line per job attempt itself, with a
    traceback only for an unexpected error.
    """
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logger = logging.getLogger(_TASKIQ_RECEIVER)
    logger.setLevel(logging.WARNING)
    for existing in [f for f in logger.filters if isinstance(f, _DuplicateJobLines)]:
        logger.removeFilter(existing)
    logger.addFilter(_DuplicateJobLines(handled))
