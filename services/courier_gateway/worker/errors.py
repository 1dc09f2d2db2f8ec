"""How failures are classified: transient (retry with backoff), terminal (dead-letter now), or
deferred (wait, without spending an attempt: the event is not at fault).

Unknown exceptions count as transient (DESIGN §5; the original treated them inconsistently and
matched on the word "invalid" in messages). Store connection errors are *deferred*: a store outage
is not the event's fault and must not push healthy events into the dead-letter queue.
"""

from __future__ import annotations

from pymongo.errors import (
    AutoReconnect,
    ConnectionFailure,
    NetworkTimeout,
    ServerSelectionTimeoutError,
)

__all__ = [
    "STORE_UNAVAILABLE",
    "DeferredError",
    "ProcessingError",
    "TerminalError",
    "TransientError",
    "classify",
]

STORE_UNAVAILABLE = (AutoReconnect, ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError)


class ProcessingError(Exception):
    """Base of the classified errors: a stable ``code`` and a human message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class TransientError(ProcessingError):
    """Worth retrying; ``retry_after`` is a lower bound on the delay (e.g. from a 429)."""

    def __init__(self, code: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after


class TerminalError(ProcessingError):
    """Retrying cannot help (unknown event type, invalid transition, downstream 4xx)."""


class DeferredError(ProcessingError):
    """Not now, and not the event's fault: retry after ``delay`` without counting an attempt."""

    def __init__(self, code: str, message: str, *, delay: float) -> None:
        super().__init__(code, message)
        self.delay = delay


def classify(error: BaseException) -> ProcessingError:
    """Map any exception to one of the three classes."""
    if isinstance(error, ProcessingError):
        return error
    if isinstance(error, STORE_UNAVAILABLE):
        return DeferredError(
            "STORE_UNAVAILABLE", f"the store is unavailable ({type(error).__name__})", delay=0
        )
    return TransientError("UNEXPECTED_ERROR", f"{type(error).__name__}: {str(error)[:300]}")
