"""The worker: consumes the stream and gives every event exactly one terminal state.

Per event (:mod:`~courier_gateway.worker.pipeline`): claim the idempotency key in the ledger
with a lease, apply the shipment update guarded by ``occurredAt`` and ``eventId``, deliver it
downstream when configured, mark the ledger processed. Each step is idempotent on its own, so a
crash between any two is safe. Failures go through :mod:`~courier_gateway.worker.retries`, a
taskiq middleware that schedules delayed retries in Redis or dead-letters.
"""

from courier_gateway.worker.errors import DeferredError, TerminalError, TransientError

__all__ = ["DeferredError", "TerminalError", "TransientError"]
