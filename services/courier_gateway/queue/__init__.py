"""The queue between intake and worker: a Redis stream read by taskiq-redis's stream broker.

- :mod:`~courier_gateway.queue.messages`: the taskiq message that carries one event;
- :mod:`~courier_gateway.queue.intake_writer`: the ingress side, one atomic script per batch of
  requests (rate limit, duplicate hints, ``XADD``; a request's events all or none) with
  concurrent requests' writes sent in one round trip.
"""

from courier_gateway.queue.intake_writer import BatchWrite, IntakeWriter, WriteOutcome, WriteRequest
from courier_gateway.queue.messages import (
    PROCESS_EVENT_TASK,
    encode_event_message,
    encode_message,
)

__all__ = [
    "PROCESS_EVENT_TASK",
    "BatchWrite",
    "IntakeWriter",
    "WriteOutcome",
    "WriteRequest",
    "encode_event_message",
    "encode_message",
]
