"""The worker's small HTTP endpoint: ``/metrics``, ``/health`` and ``/ready``.

The worker has no web framework and needs none: this is a minimal HTTP/1.1 responder on
asyncio streams (one request per connection), enough for Prometheus and Kubernetes probes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from courier_gateway.observability.metrics import render

__all__ = ["StatusServer"]

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class StatusServer:
    """Serves the worker's status on ``host:port`` while the worker runs."""

    def __init__(self, host: str, port: int, *, consuming: Callable[[], bool]) -> None:
        self._host = host
        self._port = port
        self._consuming = consuming
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
        consuming = self._consuming()
        if path == "/health":
            return 200, "application/json", orjson.dumps({"status": "ok", "consuming": consuming})
        if path == "/ready":
            status = 200 if consuming else 503
            body = {"status": "ready" if consuming else "not_ready", "consuming": consuming}
            return status, "application/json", orjson.dumps(body)
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
