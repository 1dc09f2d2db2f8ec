"""The worker's small HTTP endpoint: ``/metrics``, ``/health`` and ``/ready``.

The worker has no web framework and needs none: this is a minimal HTTP/1.1 responder on
asyncio streams (one request per connection), enough for Prometheus and Kubernetes probes.

- ``/ready``: 200 while the worker consumes and its last calls to Redis and to the store worked;
  503 while draining or while either is unreachable (the worker waits it out and turns ready
  again by itself; it is not restarted for it).
- ``/health`` (liveness): 200 unless the worker is *stuck*: consuming, yet neither a stream read
  nor a job has finished for a long time. An outage is not being stuck (the read loop keeps
  retrying), so a liveness probe never restarts a worker for a dependency it cannot fix.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from courier_gateway.observability.metrics import render

__all__ = ["Status", "StatusServer"]

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


@dataclass(frozen=True, slots=True)
class Status:
    """What the probes report: consuming or draining, dependencies, and whether it is stuck."""

    consuming: bool
    redis: bool = True
    store: bool = True
    #: Seconds since the last sign of progress, when that is past the stuck threshold.
    stuck_for: float | None = None


class StatusServer:
    """Serves the worker's status on ``host:port`` while the worker runs."""

    def __init__(self, host: str, port: int, *, status: Callable[[], Status]) -> None:
        self._host = host
        self._port = port
        self._status = status
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Start listening."""
        self._server = await asyncio.start_server(self._handle, self._host, self._port)

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def _answer(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method != "GET":
            return 405, "application/json", b'{"errorCode":"METHOD_NOT_ALLOWED"}'
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, render()
        state = self._status()
        if path == "/health":
            if state.stuck_for is not None:
                body: dict[str, object] = {
                    "status": "stuck",
                    "consuming": state.consuming,
                    "idleSeconds": round(state.stuck_for, 1),
                }
                return 503, "application/json", orjson.dumps(body)
            body = {"status": "ok", "consuming": state.consuming}
            return 200, "application/json", orjson.dumps(body)
        if path == "/ready":
            ready = state.consuming and state.redis and state.store
            body = {
                "status": "ready" if ready else "not_ready",
                "consuming": state.consuming,
                "redis": "connected" if state.redis else "unavailable",
                "store": "connected" if state.store else "unavailable",
            }
            return (200 if ready else 503), "application/json", orjson.dumps(body)
        return 404, "application/json", b'{"errorCode":"NOT_FOUND"}'

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass  # headers are not needed
            parts = line.decode("latin-1").split()
            method, path = (parts[0], parts[1].split("?")[0]) if len(parts) >= 2 else ("", "")
            status, content_type, body = self._answer(method, path)
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\ncontent-type: {content_type}\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError, UnicodeDecodeError):
            pass
        finally:
            writer.close()
